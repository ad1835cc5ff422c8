"""Re-check watched companies when their data changes, not only on the daily sweep.

Three kinds of new data move a watched company, and each queues `portfolio.check` for the
watches that can see it (queueing lock `monitor:<id>`: a burst of changes leaves one check
waiting, never a pile). There is no job lock (see `Jobs.defer_many`): two checks of one
company may overlap, and the later reading wins (service.check compares under a row lock
and drops a check whose data is older than the last one kept):

- a consent sync stores a new bank snapshot: the watch of that tenant, mode and SIREN
  (a snapshot is consented to one lender; nobody else's check reads it). The consent
  sync job calls `after_consent_sync` once its snapshot is committed.
- the lender uploads books (a new accounting period): the watch of that tenant, mode and
  SIREN (`after_books_upload`, from the upload endpoint).
- BODACC publishes a collective-proceedings announcement: every watch of that SIREN in
  the mode whose BODACC published it (`portfolio.registry_feed`, every 10 minutes, reads
  the announcements published since yesterday and re-checks the watches that have not
  yet seen one of them).

The immediate calls run after the change's commit; should a process die in between, the
periodic `portfolio.changes` finds, from the stored data itself (a snapshot or books newer
than the watch's last check), the watches still to re-check: the change's own row is the
outbox. Sirene has no feed here: a closure is seen by the daily sweep.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final

import httpx
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.books.models import CompanyBooks
from b2bscore.consents.models import Consent
from b2bscore.kit.db import SessionOpener, opened_session
from b2bscore.kit.jobs import Jobs
from b2bscore.kit.metrics import MONITORING_RECHECKS
from b2bscore.portfolio.models import MonitoredCompany
from b2bscore.sources import bodacc
from b2bscore.sources.clients import get_json
from b2bscore.sources.errors import SourceError
from b2bscore.tenants.models import utcnow

log = logging.getLogger(__name__)

CHECK_TASK: Final = "portfolio.check"
# How far back the catch-up looks: older changes are the daily sweep's.
CATCH_UP_WINDOW: Final = timedelta(days=1)
CATCH_UP_BATCH: Final = 1000
DEFER_PAGE: Final = 500
# The feed's pages: the explore API caps offset + limit at 10,000.
FEED_MAX_RECORDS: Final = 10_000
_SIREN = re.compile(r"^\d{9}$")


def check_lock(monitored_id: str) -> str:
    """The queueing lock of one watch's checks."""
    return f"monitor:{monitored_id}"


async def queue_checks(jobs: Jobs | None, monitored_ids: Iterable[str], source: str) -> int:
    """Queue a check of each watch (one waiting at most per watch); how many were queued."""
    if jobs is None:
        return 0
    items = [(check_lock(i), {"monitored_id": i}) for i in monitored_ids]
    queued = 0
    # Pages of jobs in one round trip each: a sweep of 100,000 watches queues them all.
    for start in range(0, len(items), DEFER_PAGE):
        queued += await jobs.defer_many(CHECK_TASK, items[start : start + DEFER_PAGE])
    MONITORING_RECHECKS.labels(source).inc(queued)
    return queued


async def watches_of(
    session: AsyncSession, siren: str, *, mode: str, tenant_id: str | None = None
) -> list[str]:
    """Ids of the watches of siren in mode (of one tenant when given)."""
    query = select(MonitoredCompany.id).where(
        MonitoredCompany.siren == siren, MonitoredCompany.mode == mode
    )
    if tenant_id is not None:
        query = query.where(MonitoredCompany.tenant_id == tenant_id)
    return list((await session.scalars(query)).all())


async def company_changed(
    jobs: Jobs | None,
    sessions: SessionOpener,
    *,
    siren: str,
    mode: str,
    tenant_id: str | None,
    source: str,
) -> int:
    """New data for siren: queue a check of the watches that see it; how many were queued."""
    async with opened_session(sessions) as session:
        ids = await watches_of(session, siren, mode=mode, tenant_id=tenant_id)
    return await queue_checks(jobs, ids, source)


async def after_consent_sync(
    jobs: Jobs | None, sessions: SessionOpener, consent_id: str, outcome: str
) -> str:
    """The consent sync's hook: a new snapshot re-checks its tenant's watch; returns outcome."""
    if outcome != "synced":
        return outcome
    try:
        async with opened_session(sessions) as session:
            consent = await session.get(Consent, consent_id)
            if consent is None:
                return outcome
            tenant_id, mode, siren = consent.tenant_id, consent.mode, consent.siren
        await company_changed(
            jobs, sessions, siren=siren, mode=mode, tenant_id=tenant_id, source="bank_snapshot"
        )
    except Exception as error:  # the snapshot is stored; portfolio.changes catches up
        log.warning("re-check after a consent sync not queued: %s", type(error).__name__)
    return outcome


async def after_books_upload(
    jobs: Jobs | None, sessions: SessionOpener, *, tenant_id: str, mode: str, siren: str
) -> None:
    """Books uploaded (a new accounting period): re-check the uploader's watch."""
    try:
        await company_changed(
            jobs, sessions, siren=siren, mode=mode, tenant_id=tenant_id, source="books"
        )
    except Exception as error:  # the books are stored; portfolio.changes catches up
        log.warning("re-check after a books upload not queued: %s", type(error).__name__)


async def stale_watches(session: AsyncSession, now: datetime) -> list[str]:
    """Watches whose tenant stored a snapshot or books after their last check (recent ones)."""
    since = now - CATCH_UP_WINDOW
    watch = MonitoredCompany
    same_company: Any = and_(
        watch.tenant_id == Consent.tenant_id,
        watch.mode == Consent.mode,
        watch.siren == Consent.siren,
    )
    snapshots = (
        select(watch.id)
        .join(Consent, same_company)
        .where(
            Consent.status == "active",
            Consent.snapshot_at > since,
            Consent.snapshot_at > watch.last_checked_at,
        )
    )
    books = (
        select(watch.id)
        .join(
            CompanyBooks,
            and_(
                watch.tenant_id == CompanyBooks.tenant_id,
                watch.mode == CompanyBooks.mode,
                watch.siren == CompanyBooks.siren,
            ),
        )
        .where(CompanyBooks.created_at > since, CompanyBooks.created_at > watch.last_checked_at)
    )
    query = snapshots.union(books).limit(CATCH_UP_BATCH)
    return list((await session.scalars(query)).all())


async def catch_up(jobs: Jobs | None, sessions: SessionOpener) -> int:
    """Queue the re-checks that the immediate hooks missed; how many were queued."""
    async with opened_session(sessions) as session:
        ids = await stale_watches(session, utcnow())
    return await queue_checks(jobs, ids, "catch_up")


def _feed_params(since: date, offset: int) -> dict[str, str]:
    return {
        "where": f"dateparution>=date'{since.isoformat()}'",
        "refine": "familleavis:collective",
        "order_by": "dateparution",
        "limit": str(bodacc.PAGE_LIMIT),
        "offset": str(offset),
    }


def _sirens(record: object) -> set[str]:
    registre = record.get("registre") if isinstance(record, dict) else None
    values = registre if isinstance(registre, list) else [registre]
    return {
        compact
        for value in values
        if isinstance(value, str) and _SIREN.match(compact := value.replace(" ", ""))
    }


def announcement_key(published_on: date, nature: str | None) -> str:
    """How a check remembers an announcement it reported (known_proceedings)."""
    return f"{published_on.isoformat()}|{nature or ''}"


async def read_feed(client: httpx.AsyncClient, since: date) -> dict[str, set[str]]:
    """Collective-proceedings announcements published since `since`: keys by SIREN."""
    found: dict[str, set[str]] = {}
    offset = 0
    while offset < FEED_MAX_RECORDS:
        page = await get_json(
            client, bodacc.DATASET, what="bodacc feed", params=_feed_params(since, offset)
        )
        results = page.get("results")
        if not isinstance(results, list) or not results:
            break
        for record in results:
            try:
                announcement = bodacc.parse_record(record)
            except ValueError:
                continue  # a garbled record: the daily sweep reads the company whole
            if announcement.family.lower() != "collective":
                continue
            key = announcement_key(announcement.published_on, announcement.nature)
            for siren in _sirens(record):
                found.setdefault(siren, set()).add(key)
        offset += len(results)
        total = page.get("total_count")
        if not isinstance(total, int) or offset >= total:
            break
    return found


async def unseen(session: AsyncSession, mode: str, announced: dict[str, set[str]]) -> list[str]:
    """Watches in mode of the announced SIRENs that have not seen one of the announcements."""
    ids: list[str] = []
    sirens: Sequence[str] = sorted(announced)
    for start in range(0, len(sirens), 1000):
        rows = await session.execute(
            select(
                MonitoredCompany.id, MonitoredCompany.siren, MonitoredCompany.known_proceedings
            ).where(
                MonitoredCompany.mode == mode,
                MonitoredCompany.siren.in_(sirens[start : start + 1000]),
            )
        )
        for monitored_id, siren, known in rows.all():
            # None: never checked yet, and its first check is already queued.
            if known is not None and announced[siren] - set(known):
                ids.append(monitored_id)
    return ids


async def registry_feed(
    jobs: Jobs | None,
    sessions: SessionOpener,
    clients: Mapping[str, httpx.AsyncClient | None],
    since: date,
) -> int:
    """Re-check the watches BODACC published new proceedings for, per mode; how many."""
    queued = 0
    for mode, client in clients.items():
        if client is None:
            continue
        async with opened_session(sessions) as session:
            watched = await session.scalar(
                select(MonitoredCompany.id).where(MonitoredCompany.mode == mode).limit(1)
            )
        if watched is None:
            continue  # nobody watches in this mode: do not ask BODACC
        try:
            announced = await read_feed(client, since)
        except SourceError as error:
            log.warning("bodacc feed (%s) unavailable: %s", mode, error.reason)
            continue
        async with opened_session(sessions) as session:
            ids = await unseen(session, mode, announced)
        queued += await queue_checks(jobs, ids, "bodacc")
    return queued
