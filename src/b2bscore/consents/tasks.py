"""Background work of consents: sync one consent (locked), retry a failed code exchange,
the schedule, expiry and purge.

`consents.sync` runs under the job lock `consent-sync:<id>` (and the same queueing lock):
one consent syncs once at a time across all workers, and at most one more waits. A
transient failure (bank down, token endpoint timing out) raises, and procrastinate retries
with exponential backoff; the previous snapshot stays usable meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
from procrastinate import RetryStrategy

from b2bscore.consents import sandbox, service
from b2bscore.consents.repository import ConsentRepository
from b2bscore.kit.db import opened_session
from b2bscore.kit.jobs import JobContext, periodic, state_of, task
from b2bscore.kit.state import AppState
from b2bscore.portfolio.changes import after_consent_sync
from b2bscore.tenants.models import utcnow

log = logging.getLogger(__name__)

SCHEDULE_BATCH = 1000


def sync_tools(state: AppState, http: httpx.AsyncClient) -> service.SyncTools:
    """What a sync needs, from the worker's long-lived state."""
    return service.SyncTools(
        settings=state.settings,
        sessions=state.sessionmaker,
        keyring=state.keyring,
        tokenizer=state.tokenizer,
        sandbox_clients=state.sandbox_clients,
        live_clients=state.live_clients,
        http=http,
    )


@task(
    name=service.SYNC_TASK,
    pass_context=True,
    queue="consents",
    retry=RetryStrategy(max_attempts=5, exponential_wait=2),
)
async def sync(context: JobContext, consent_id: str) -> str:
    """Sync one consent's granted bank data into a new snapshot."""
    state = state_of(context)
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http:
        outcome = await service.sync_consent(sync_tools(state, http), consent_id, utcnow())
    # A new snapshot re-checks the tenant's watch of the company (portfolio/changes.py).
    return await after_consent_sync(state.jobs, state.sessionmaker, consent_id, outcome)


# 2, 4, 8 ... 256 s between tries: about 8.5 minutes in all, inside the 10 minutes a
# bank's code lives at most (RFC 6749 4.1.2; B2BSCORE_CONSENT_CODE_SECONDS). Past the
# code's life the job (or the schedule's sweep) expires the consent.
EXCHANGE_RETRY = RetryStrategy(
    max_attempts=8, exponential_wait=2, retry_exceptions=[service.TokenEndpointError]
)


@task(name=service.EXCHANGE_TASK, pass_context=True, queue="consents", retry=EXCHANGE_RETRY)
async def exchange(context: JobContext, consent_id: str) -> str:
    """Retry the code exchange of a consent whose bank's token endpoint failed."""
    state = state_of(context)
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http:
        status = await service.exchange_code(
            state.sessionmaker, state.settings, state.keyring, http, consent_id, utcnow()
        )
    if status == "active":
        await service.queue_sync(state.jobs, consent_id)
    return status


@periodic(cron="* * * * *", periodic_id="consents")
@task(
    name="consents.schedule",
    pass_context=True,
    queue="consents",
    queueing_lock="consents.schedule",
)
async def schedule(context: JobContext, timestamp: int) -> int:
    """Every minute: expire, announce and purge; queue the syncs that are due."""
    state = state_of(context)
    now = utcnow()
    await service.sweep(state.sessionmaker, state.settings, now)
    older_than = now - timedelta(seconds=state.settings.consent_sync_interval_seconds)
    if state.jobs is not None and state.jobs.in_memory:
        # The embedded default's in-memory queue must stay short: waves (see queue_wave).
        await state.jobs.defer(
            WAVE_TASK,
            queueing_lock=f"{WAVE_TASK}:due",
            kind="due",
            older_than=older_than.isoformat(),
        )
        return 0
    async with opened_session(state.sessionmaker) as session:
        due = await ConsentRepository(session).due_for_sync(older_than, SCHEDULE_BATCH)
    queued = 0
    for consent_id in due:
        queued += await service.queue_sync(state.jobs, consent_id)
    return queued


CATCH_UP_TASK = "consents.catch_up"
WAVE_TASK = "consents.queue_wave"


@task(name=CATCH_UP_TASK, pass_context=True, queue="consents", queueing_lock=CATCH_UP_TASK)
async def catch_up(context: JobContext) -> None:
    """Queue the first sync of every test consent that has none, in waves (the embedded
    default's in-memory queue starts empty: the sandbox's standing consents wait for it)."""
    state = state_of(context)
    if state.jobs is not None:
        await state.jobs.defer(
            WAVE_TASK, queueing_lock=f"{WAVE_TASK}:never_synced", kind="never_synced"
        )


@task(name=WAVE_TASK, pass_context=True, queue="consents")
async def queue_wave(
    context: JobContext, kind: str, after: str = "", older_than: str | None = None
) -> int:
    """Queue one wave of syncs, then this task again for the next wave; how many queued.

    A chain of short jobs rather than one long one: the worker's graceful stop waits for
    running jobs, and thousands of syncs take minutes to queue at the pace of the waves
    (consents/sandbox.py, queue_one_wave).
    """
    state = state_of(context)
    jobs = state.jobs
    if jobs is None:
        return 0
    since = None if older_than is None else datetime.fromisoformat(older_than)

    async def due(after_id: str, limit: int) -> Sequence[str]:
        async with opened_session(state.sessionmaker) as session:
            repository = ConsentRepository(session)
            if kind == "due" and since is not None:
                return await repository.due_for_sync(since, limit, after=after_id)
            return await repository.never_synced("test", limit, after=after_id)

    wave = await sandbox.queue_one_wave(jobs, due, after=after)
    if wave.done:
        return wave.queued
    await jobs.defer(
        WAVE_TASK,
        queueing_lock=f"{WAVE_TASK}:{kind}",
        schedule_at=utcnow() + timedelta(seconds=sandbox.WAVE_PAUSE_SECONDS),
        kind=kind,
        after=wave.after,
        older_than=older_than,
    )
    return wave.queued
