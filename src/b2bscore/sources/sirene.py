"""INSEE API Sirene 3.11: the legal unit ``GET /siren/{siren}``.

Real answers differ from the simplest example in three ways this adapter handles: units
whose owners restrict publication (``statutDiffusionUniteLegale`` ``P``) show ``[ND]`` in
place of hidden fields; an answer to ``?date=`` holds only the period valid at that date,
which may have an end date; the public plan allows 30 requests a minute, so calls go through
a quota shared by every worker (through the cache) and a 429 is retried after its
``Retry-After`` when the budget allows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict

from b2bscore.kit.cache import Cache
from b2bscore.sources.clients import SIRENE_KEY_HEADER, get_json
from b2bscore.sources.errors import SourceUpstreamError, validate_wire

QUOTA_KEY = "quota:sirene"
QUOTA_WINDOW_SECONDS = 60
HIDDEN = "[ND]"  # "non diffusible": a field the unit's owner chose not to publish


def _visible(value: object) -> object:
    """None for a hidden or empty field; dates that are not dates are hidden too."""
    if value is None or (isinstance(value, str) and (not value.strip() or value == HIDDEN)):
        return None
    return value


def _lenient_date(value: object) -> object:
    value = _visible(value)
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return value


Visible = Annotated[str | None, BeforeValidator(_visible)]
VisibleDate = Annotated[date | None, BeforeValidator(_lenient_date)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Period(_Wire):
    """One period of the legal unit."""

    dateFin: VisibleDate = None  # noqa: N815 - INSEE field names
    dateDebut: VisibleDate = None  # noqa: N815
    etatAdministratifUniteLegale: Literal["A", "C"]  # noqa: N815
    categorieJuridiqueUniteLegale: Visible = None  # noqa: N815
    activitePrincipaleUniteLegale: Visible = None  # noqa: N815


class UniteLegale(_Wire):
    """The legal unit, as much of it as is published."""

    siren: str
    statutDiffusionUniteLegale: Visible = None  # noqa: N815
    dateCreationUniteLegale: VisibleDate = None  # noqa: N815
    trancheEffectifsUniteLegale: Visible = None  # noqa: N815
    categorieEntreprise: Visible = None  # noqa: N815
    periodesUniteLegale: list[Period]  # noqa: N815

    def current(self) -> Period | None:
        """The open period, else (an answer to ``?date=``) the one that started last."""
        open_periods = [p for p in self.periodesUniteLegale if p.dateFin is None]
        if open_periods:
            return open_periods[0]
        dated = [p for p in self.periodesUniteLegale if p.dateDebut is not None]
        if dated:
            return max(dated, key=lambda p: p.dateDebut or date.min)
        return self.periodesUniteLegale[0] if self.periodesUniteLegale else None


class _Answer(_Wire):
    uniteLegale: UniteLegale  # noqa: N815


def parse_unit(body: object) -> UniteLegale:
    """The legal unit of a ``GET /siren/{siren}`` answer; SourceFormatError names the field."""
    return validate_wire(_Answer, body, "sirene").uniteLegale


def absent_message(body: object) -> str | None:
    """The message of a Sirene 'not found' answer (``header.statut`` 404), else None."""
    if not isinstance(body, dict):
        return None
    header = body.get("header")
    if isinstance(header, dict) and header.get("statut") == 404 and "uniteLegale" not in body:
        message = header.get("message")
        return message if isinstance(message, str) else "not found"
    return None


@dataclass(slots=True)
class SireneQuota:
    """The plan's requests per minute, counted in the shared cache by every worker."""

    cache: Cache
    per_minute: int
    key: str = QUOTA_KEY

    async def acquire(self, deadline: float | None) -> None:
        """Count one call, waiting for the next window if the deadline allows; else raise."""
        while True:
            hits, seconds_left = await self.cache.incr_window(self.key, QUOTA_WINDOW_SECONDS)
            if hits <= self.per_minute:
                return
            if deadline is None or time.monotonic() + seconds_left >= deadline:
                raise SourceUpstreamError("sirene: quota exhausted")
            await asyncio.sleep(seconds_left)


async def fetch_sirene(
    client: httpx.AsyncClient,
    siren: str,
    *,
    quota: SireneQuota | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """The ``GET /siren/{siren}`` answer, within the quota; a 429 is retried after its
    Retry-After when that still fits before deadline (time.monotonic())."""
    while True:
        if quota is not None:
            await quota.acquire(deadline)
        try:
            return await get_json(client, f"siren/{siren}", what="sirene")
        except SourceUpstreamError as error:
            retry = error.retry_after
            if retry is None:
                raise
            if deadline is None or time.monotonic() + retry >= deadline:
                raise
            await asyncio.sleep(retry)


__all__ = [
    "SIRENE_KEY_HEADER",
    "SireneQuota",
    "UniteLegale",
    "absent_message",
    "fetch_sirene",
    "parse_unit",
]
