"""Background work of consents: sync one consent (locked), the schedule, expiry and purge.

`consents.sync` runs under the job lock `consent-sync:<id>` (and the same queueing lock):
one consent syncs once at a time across all workers, and at most one more waits. A
transient failure (bank down, token endpoint timing out) raises, and procrastinate retries
with exponential backoff; the previous snapshot stays usable meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import httpx
from procrastinate import RetryStrategy

from b2bscore.consents import sandbox, service
from b2bscore.consents.repository import ConsentRepository
from b2bscore.kit.db import opened_session
from b2bscore.kit.jobs import JobContext, periodic, state_of, task
from b2bscore.kit.state import AppState
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
        return await service.sync_consent(sync_tools(state, http), consent_id, utcnow())


@periodic(cron="* * * * *", periodic_id="consents")
@task(
    name="consents.schedule",
    pass_context=True,
    queue="consents",
    # One at a time: on the embedded default a schedule queues in waves and may outlast
    # its minute.
    lock="consents.schedule",
    queueing_lock="consents.schedule",
)
async def schedule(context: JobContext, timestamp: int) -> int:
    """Every minute: expire, announce and purge; queue the syncs that are due."""
    state = state_of(context)
    now = utcnow()
    await service.sweep(state.sessionmaker, state.settings, now)
    older_than = now - timedelta(seconds=state.settings.consent_sync_interval_seconds)
    if state.jobs is not None and state.jobs.in_memory:
        # The embedded default's in-memory queue must stay short (sandbox.queue_in_waves).
        async def due_after(after: str, limit: int) -> Sequence[str]:
            async with opened_session(state.sessionmaker) as session:
                return await ConsentRepository(session).due_for_sync(older_than, limit, after=after)

        return await sandbox.queue_in_waves(state.jobs, due_after)
    async with opened_session(state.sessionmaker) as session:
        due = await ConsentRepository(session).due_for_sync(older_than, SCHEDULE_BATCH)
    queued = 0
    for consent_id in due:
        queued += await service.queue_sync(state.jobs, consent_id)
    return queued


CATCH_UP_TASK = "consents.catch_up"


@task(name=CATCH_UP_TASK, pass_context=True, queue="consents", queueing_lock=CATCH_UP_TASK)
async def catch_up(context: JobContext) -> int:
    """Queue the first sync of every test consent that has none (the embedded default's
    in-memory queue starts empty: the sandbox's standing consents wait for this)."""
    state = state_of(context)
    if state.jobs is None:
        return 0
    return await sandbox.queue_never_synced(state.sessionmaker, state.jobs)
