"""Registry adapter: the INSEE Sirene legal unit and its BODACC announcements, together.

Raw record: ``{"sirene": <Sirene answer>, "bodacc": <BODACC answer or null>}``. Sirene is
the source; BODACC only adds announcements, so a BODACC failure or a malformed BODACC
answer leaves the registry usable, with a ``detail`` saying what was missing or dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import date
from typing import Any

import httpx

from b2bscore.sources import bodacc as bodacc_source
from b2bscore.sources import sirene as sirene_source
from b2bscore.sources.errors import SourceFormatError
from b2bscore.sources.types import Announcement, RegistryData


def parse_raw(raw: Mapping[str, Any], as_of: date) -> RegistryData:
    """The normalized registry data of a registry raw record (see docs/PROVIDERS.md)."""
    unit = sirene_source.parse_unit(raw.get("sirene"))
    current = unit.current()
    if current is None:
        raise SourceFormatError("sirene: no period")
    announcements: tuple[Announcement, ...] = ()
    dropped = 0
    bodacc_note: str | None = None
    bodacc_raw = raw.get("bodacc")
    if bodacc_raw is None:
        bodacc_note = "bodacc unavailable: no announcements"
    else:
        try:
            notices = bodacc_source.parse_records(bodacc_raw)
        except SourceFormatError as error:
            bodacc_note = f"{error.reason}: no announcements"
        else:
            announcements, dropped = notices.announcements, notices.dropped
            if dropped:
                bodacc_note = (
                    f"bodacc: {dropped} malformed record(s) dropped ({notices.first_error})"
                )
    state = bodacc_source.lifecycle(announcements)
    return RegistryData(
        as_of=as_of,
        siren=unit.siren,
        created_on=unit.dateCreationUniteLegale,
        legal_form=current.categorieJuridiqueUniteLegale,
        naf=current.activitePrincipaleUniteLegale,
        headcount_band=unit.trancheEffectifsUniteLegale,
        category=unit.categorieEntreprise,
        active=current.etatAdministratifUniteLegale == "A",
        announcements=announcements,
        proceedings_opened_on=state.opened_on,
        ongoing_proceeding=state.ongoing,
        dropped=dropped,
        note=bodacc_note[:160] if bodacc_note else None,
    )


def bodacc_missing(raw: Mapping[str, Any]) -> bool:
    """True when the raw record holds no BODACC answer (registry usable, announcements unknown)."""
    return raw.get("bodacc") is None


async def fetch_registry(
    client_sirene: httpx.AsyncClient,
    client_bodacc: httpx.AsyncClient | None,
    siren: str,
    *,
    quota: sirene_source.SireneQuota | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """The registry raw record: Sirene and BODACC fetched concurrently."""
    bodacc_task = asyncio.create_task(bodacc_source.fetch_bodacc(client_bodacc, siren))
    try:
        sirene = await sirene_source.fetch_sirene(
            client_sirene, siren, quota=quota, deadline=deadline
        )
    except BaseException:
        # Without Sirene the source is lost: do not leave BODACC running behind it.
        bodacc_task.cancel()
        await asyncio.gather(bodacc_task, return_exceptions=True)
        raise
    return {"sirene": sirene, "bodacc": await bodacc_task}
