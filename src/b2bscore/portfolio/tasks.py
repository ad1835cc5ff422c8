"""Background work of the portfolio: monitoring checks and sweeps, batch preparation and chunks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from procrastinate import RetryStrategy
from sqlalchemy import select

from b2bscore.kit.db import opened_session
from b2bscore.kit.jobs import JobContext, periodic, state_of, task
from b2bscore.portfolio import batches, changes
from b2bscore.portfolio import service as monitoring
from b2bscore.portfolio.models import Batch
from b2bscore.portfolio.repository import PortfolioRepository

SWEEP_PAGE = 1000


# A check that fails (the audit store refused or timed out) is tried again: 4 tries in
# all, 2 s, 4 s and 8 s apart; then the next change or sweep checks the company again.
@task(
    name=monitoring.CHECK_TASK,
    pass_context=True,
    queue="monitoring",
    retry=RetryStrategy(max_attempts=3, exponential_wait=2),
)
async def check(context: JobContext, monitored_id: str) -> list[str]:
    """Re-check one watched company; returns the event types emitted."""
    outcome = await monitoring.check(state_of(context), monitored_id)
    return outcome.events


@periodic(cron="0 4 * * *", periodic_id="daily")
@task(
    name="portfolio.sweep", pass_context=True, queue="monitoring", queueing_lock="portfolio.sweep"
)
async def sweep(context: JobContext, timestamp: int) -> int:
    """Daily: queue a check of every watched company (workers share them); returns how many."""
    state = state_of(context)
    queued = 0
    after: str | None = None
    while True:
        async with opened_session(state.sessionmaker) as session:
            ids = await PortfolioRepository(session).monitored_ids(after, SWEEP_PAGE)
        if not ids:
            return queued
        await changes.queue_checks(state.jobs, ids, "sweep")
        queued += len(ids)
        after = ids[-1]


@periodic(cron="* * * * *", periodic_id="changes")
@task(
    name="portfolio.changes",
    pass_context=True,
    queue="monitoring",
    queueing_lock="portfolio.changes",
)
async def catch_up_changes(context: JobContext, timestamp: int) -> int:
    """Every minute: re-check the watches whose tenant stored newer data than their last check."""
    state = state_of(context)
    return await changes.catch_up(state.jobs, state.sessionmaker)


@periodic(cron="*/10 * * * *", periodic_id="registry_feed")
@task(
    name="portfolio.registry_feed",
    pass_context=True,
    queue="monitoring",
    queueing_lock="portfolio.registry_feed",
)
async def registry_feed(context: JobContext, timestamp: int) -> int:
    """Every 10 minutes: re-check the watches BODACC published new proceedings for."""
    state = state_of(context)
    since = datetime.fromtimestamp(timestamp, UTC).date() - timedelta(days=1)
    clients = {
        "test": state.sandbox_clients.bodacc if state.sandbox_clients else None,
        "live": state.live_clients.bodacc if state.live_clients else None,
    }
    return await changes.registry_feed(state.jobs, state.sessionmaker, clients, since)


@task(name=batches.PREPARE_TASK, pass_context=True, queue="batches")
async def batch_prepare(context: JobContext, batch_id: str) -> int:
    """Split an uploaded batch into rows and queue its chunks."""
    return await batches.prepare(state_of(context), batch_id)


@task(name=batches.CHUNK_TASK, pass_context=True, queue="batches")
async def batch_chunk(context: JobContext, batch_id: str, first_row: int, last_row: int) -> int:
    """Decide the pending rows of one chunk of a batch."""
    return await batches.run_chunk(state_of(context), batch_id, first_row, last_row)


@periodic(cron="* * * * *", periodic_id="resume")
@task(
    name="portfolio.batch_resume",
    pass_context=True,
    queue="batches",
    queueing_lock="portfolio.batch_resume",
)
async def batch_resume(context: JobContext, timestamp: int) -> int:
    """Every minute: re-queue the work of unfinished batches (lost jobs, restarts)."""
    state = state_of(context)
    async with opened_session(state.sessionmaker) as session:
        ids = list(
            (
                await session.scalars(
                    select(Batch.id).where(Batch.status != "completed").limit(100)
                )
            ).all()
        )
    for batch_id in ids:
        if state.jobs is not None:
            # The same lock as the running preparation: at most one at a time, and the
            # chunks it queues carry queueing locks, so a resume adds no duplicate.
            await state.jobs.defer(
                batches.PREPARE_TASK,
                lock=f"batch:{batch_id}",
                queueing_lock=f"batch:{batch_id}:prepare",
                batch_id=batch_id,
            )
    return len(ids)
