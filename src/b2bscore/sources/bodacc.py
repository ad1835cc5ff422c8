"""BODACC announcements (Opendatasoft explore v2.1, data set ``annonces-commerciales``).

Records are read one by one: a malformed record (no ``dateparution``, no family, a
``jugement`` that is neither a JSON string nor an object...) is dropped and counted, never
fatal, because one garbled announcement must not hide the company's whole legal record.
Collective-proceedings notices are classified (opening, plan, conversion, closure, other)
so that a procedure's lifecycle can be followed: a closed procedure is not an ongoing one,
and later notices of the same procedure (plan, creditors' list, closure) do not move its
start.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import orjson

from b2bscore.sources.clients import get_json
from b2bscore.sources.errors import SourceError, SourceFormatError
from b2bscore.sources.types import Announcement

log = logging.getLogger(__name__)

DATASET = "catalog/datasets/annonces-commerciales/records"
PAGE_LIMIT = 100  # the explore API's own maximum per call
MAX_PAGES = 5  # 500 notices: decades of a company's life; beyond that, the newest suffice
# The sandbox once wrote "depot" for the accounts-filing family; the data set says "dpc".
_FAMILY_ALIASES = {"depot": "dpc"}
FAMILIES = frozenset(
    {
        "collective",
        "dpc",
        "immatriculation",
        "creation",
        "modification",
        "radiation",
        "vente",
        "conciliation",
        "rectificatif",
        "annulation",
    }
)
PROCEEDING_FAMILIES = frozenset({"collective", "conciliation"})

OPENING, PLAN, CONVERSION, CLOSURE, OTHER = "opening", "plan", "conversion", "closure", "other"


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def classify(family: str, nature: str | None, famille: str | None = None) -> str | None:
    """The lifecycle step of a proceedings notice (None for other families)."""
    if family not in PROCEEDING_FAMILIES:
        return None
    text = _plain(f"{famille or ''} {nature or ''}")
    if "cloture" in text or "mettant fin" in text or "extinction" in text:
        return CLOSURE
    if "conversion" in text or "convertissant" in text:
        return CONVERSION
    if "ouverture" in text:
        return OPENING
    if "plan" in text:
        return PLAN
    if family == "conciliation":
        return OPENING
    # A collective notice whose judgment cannot be read is taken as an opening: the
    # conservative reading of "some proceedings exist".
    return OTHER if text.strip() else OPENING


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The company's latest collective procedure, as its notices tell it."""

    opened_on: date | None  # publication of the notice that opened it (or its first notice)
    ongoing: bool
    closed_on: date | None


def lifecycle(announcements: Iterable[Announcement]) -> Lifecycle:
    """The state of the latest procedure: when it was opened and whether it is still running."""
    steps = sorted(
        (
            (a.judged_on or a.published_on, a.published_on, a.kind or classify(a.family, a.nature))
            for a in announcements
            if a.family in PROCEEDING_FAMILIES
        ),
        key=lambda s: (s[0], s[1]),
    )
    opened: date | None = None
    closed: date | None = None
    for _, published, kind in steps:
        if kind == OPENING:
            # Every opening judgment starts a procedure (a second one, without the first's
            # closure in sight, replaces it: a conversion published as an opening).
            opened, closed = published, None
        elif kind == CLOSURE:
            closed = published
            opened = opened if opened is not None else published
        elif opened is None or closed is not None:
            # Plan, conversion or another judgment without its opening in sight (older than
            # the notices read): the procedure started no later than this notice.
            opened, closed = published, None
    if opened is None:
        return Lifecycle(None, False, None)
    return Lifecycle(opened, closed is None, closed)


def _jugement(value: object) -> dict[str, Any] | None:
    """The jugement document: a JSON string (the usual form) or an object already."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("jugement: not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("jugement: not an object")
    return value


def _text(doc: Mapping[str, Any] | None, key: str) -> str | None:
    value = doc.get(key) if doc is not None else None
    return value if isinstance(value, str) and value.strip() else None


def _date(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def parse_record(record: object) -> Announcement:
    """One announcement of a record; ValueError names the field when the record is malformed."""
    if not isinstance(record, dict):
        raise ValueError("record: not an object")
    family = record.get("familleavis")
    if not isinstance(family, str) or not family.strip():
        raise ValueError("familleavis: missing")
    family = _FAMILY_ALIASES.get(family.strip().lower(), family.strip().lower())
    published = _date(record.get("dateparution"))
    if published is None:
        raise ValueError("dateparution: missing or not a date")
    try:
        jugement = _jugement(record.get("jugement"))
    except ValueError:
        # The notice itself is dated and classified: keep it, without its judgment's
        # nature (a collective notice then reads as an opening, the conservative reading).
        jugement = None
    nature = _text(jugement, "nature")
    return Announcement(
        family=family,
        nature=nature,
        published_on=published,
        kind=classify(family, nature, _text(jugement, "famille")),
        judged_on=_date(jugement.get("date")) if jugement is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Notices:
    """The announcements kept (newest first) and how many records were dropped."""

    announcements: tuple[Announcement, ...]
    dropped: int
    first_error: str | None = None


def parse_records(body: object) -> Notices:
    """The announcements of a BODACC answer ``{total_count, results}``; SourceFormatError
    only when the envelope itself is unusable."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise SourceFormatError("bodacc: results missing")
    kept: list[Announcement] = []
    dropped = 0
    first_error: str | None = None
    for record in results:
        try:
            kept.append(parse_record(record))
        except ValueError as error:
            dropped += 1
            first_error = first_error or str(error)
    kept.sort(key=lambda a: a.published_on, reverse=True)
    return Notices(tuple(kept), dropped, first_error)


def _params(siren: str, offset: int) -> dict[str, str]:
    return {
        "refine": f"registre:{siren}",
        "order_by": "dateparution desc",
        "limit": str(PAGE_LIMIT),
        "offset": str(offset),
    }


async def fetch_bodacc(client: httpx.AsyncClient | None, siren: str) -> dict[str, Any] | None:
    """Every announcement of siren (newest first, up to MAX_PAGES pages) as one answer;
    None when BODACC is not configured or failed (the registry goes on without it)."""
    if client is None:
        return None
    try:
        first = await get_json(client, DATASET, what="bodacc", params=_params(siren, 0))
        total = first.get("total_count")
        results = first.get("results")
        if not isinstance(total, int) or not isinstance(results, list):
            return first  # the parser will count it as unusable
        offsets: Sequence[int] = range(PAGE_LIMIT, min(total, PAGE_LIMIT * MAX_PAGES), PAGE_LIMIT)
        pages = await asyncio.gather(
            *(get_json(client, DATASET, what="bodacc", params=_params(siren, o)) for o in offsets)
        )
    except SourceError as error:
        log.warning("bodacc failed: %s", error.reason)
        return None
    merged = list(results)
    for page in pages:
        more = page.get("results")
        if isinstance(more, list):
            merged.extend(more)
    return {"total_count": total, "results": merged}
