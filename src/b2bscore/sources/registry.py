"""Registry adapter: INSEE Sirene legal unit and BODACC announcements."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from b2bscore.sources.clients import get_json
from b2bscore.sources.errors import SourceError, SourceFormatError, validate_wire
from b2bscore.sources.types import Announcement, RegistryData

log = logging.getLogger(__name__)

BODACC_DATASET = "catalog/datasets/annonces-commerciales/records"
BODACC_LIMIT = 100


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Period(_Wire):
    dateFin: date | None = None  # noqa: N815 - INSEE field names
    etatAdministratifUniteLegale: Literal["A", "C"]  # noqa: N815
    categorieJuridiqueUniteLegale: str | None = None  # noqa: N815
    activitePrincipaleUniteLegale: str | None = None  # noqa: N815


class _UniteLegale(_Wire):
    siren: str
    dateCreationUniteLegale: date | None = None  # noqa: N815
    trancheEffectifsUniteLegale: str | None = None  # noqa: N815
    categorieEntreprise: str | None = None  # noqa: N815
    periodesUniteLegale: list[_Period]  # noqa: N815


class _Sirene(_Wire):
    uniteLegale: _UniteLegale  # noqa: N815


class _Record(_Wire):
    familleavis: str
    dateparution: date
    jugement: str | None = None


class _Bodacc(_Wire):
    results: list[_Record]


class _Jugement(_Wire):
    nature: str | None = None


def _nature(jugement: str | None) -> str | None:
    # One garbled announcement must not hide the company's whole legal record.
    if not jugement:
        return None
    try:
        return _Jugement.model_validate(orjson.loads(jugement)).nature
    except (orjson.JSONDecodeError, ValidationError):
        return None


def parse_raw(raw: Mapping[str, Any], as_of: date) -> RegistryData:
    """The normalized registry data of a registry raw record (see docs/PROVIDERS.md)."""
    sirene = validate_wire(_Sirene, raw.get("sirene"), "sirene").uniteLegale
    if not sirene.periodesUniteLegale:
        raise SourceFormatError("sirene: no period")
    current = next(
        (p for p in sirene.periodesUniteLegale if p.dateFin is None),
        sirene.periodesUniteLegale[0],
    )
    announcements: tuple[Announcement, ...] = ()
    bodacc_raw = raw.get("bodacc")
    if bodacc_raw is not None:
        bodacc = validate_wire(_Bodacc, bodacc_raw, "bodacc")
        announcements = tuple(
            sorted(
                (
                    Announcement(
                        family=r.familleavis,
                        nature=_nature(r.jugement),
                        published_on=r.dateparution,
                    )
                    for r in bodacc.results
                ),
                key=lambda a: a.published_on,
                reverse=True,
            )
        )
    return RegistryData(
        as_of=as_of,
        siren=sirene.siren,
        created_on=sirene.dateCreationUniteLegale,
        legal_form=current.categorieJuridiqueUniteLegale,
        naf=current.activitePrincipaleUniteLegale,
        headcount_band=sirene.trancheEffectifsUniteLegale,
        category=sirene.categorieEntreprise,
        active=current.etatAdministratifUniteLegale == "A",
        announcements=announcements,
    )


def bodacc_missing(raw: Mapping[str, Any]) -> bool:
    """True when the raw record holds no BODACC answer (registry usable, announcements unknown)."""
    return raw.get("bodacc") is None


async def _bodacc(client: httpx.AsyncClient | None, siren: str) -> dict[str, Any] | None:
    if client is None:
        return None
    try:
        return await get_json(
            client,
            BODACC_DATASET,
            what="bodacc",
            params={"refine": f"registre:{siren}", "limit": str(BODACC_LIMIT)},
        )
    except SourceError as error:
        log.warning("bodacc failed for %s: %s", siren, error.reason)
        return None


async def fetch_registry(
    client_sirene: httpx.AsyncClient, client_bodacc: httpx.AsyncClient | None, siren: str
) -> dict[str, Any]:
    """The registry raw record: Sirene and BODACC fetched concurrently."""
    bodacc_task = asyncio.create_task(_bodacc(client_bodacc, siren))
    try:
        sirene = await get_json(client_sirene, f"siren/{siren}", what="sirene")
    except BaseException:
        # Without Sirene the source is lost: do not leave BODACC running behind it.
        bodacc_task.cancel()
        await asyncio.gather(bodacc_task, return_exceptions=True)
        raise
    return {"sirene": sirene, "bodacc": await bodacc_task}
