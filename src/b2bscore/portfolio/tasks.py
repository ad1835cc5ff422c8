"""Background work of the portfolio: monitoring checks and sweeps, batch preparation and chunks."""

from __future__ import annotations

from procrastinate import RetryStrategy
from sqlalchemy import select

from b2bscore.kit.db import opened_session
from b2bscore.kit.jobs import JobContext, periodic, state_of, task
from b2bscore.portfolio import batches
from b2bscore.portfolio import service as monitoring
from b2bscore.portfolio.models import Batch
from b2bscore.portfolio.repository import PortfolioRepository

SWEEP_PAGE = 1000


# A check decides like an API request, within the same budget: a busy moment (an audit
# commit or a provider over the deadline) fails one attempt, not the company's monitoring
# until the next sweep. Retried with backoff from 2 s, doubling (RetryStrategy).
@task(
    name=monitoring.CHECK_TASK,
    pass_context=True,
    queue="monitoring",
    retry=RetryStrategy(max_attempts=5, exponential_wait=2),
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
        if state.jobs is not None:
            for monitored_id in ids:
                lock = f"monitor:{monitored_id}"
                await state.jobs.defer(
                    monitoring.CHECK_TASK, lock=lock, queueing_lock=lock, monitored_id=monitored_id
                )
        queued += len(ids)
        after = ids[-1]


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
