"""Background work of webhooks: deliver an endpoint's events of one key in order; relay.

`webhooks.deliver` runs under the job lock `webhook:<endpoint>:<ordering key>`, so one
worker at a time works through that queue, oldest first, and stops at a delivery that must
wait for its retry (later events of the same company wait behind it; other companies and
other endpoints do not). `webhooks.relay` runs every minute on one worker and re-queues
whatever is due, which makes the outbox self-healing (a lost job, a restart of the
embedded in-process queue).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
import orjson

from b2bscore.kit.db import opened_session
from b2bscore.kit.jobs import JobContext, periodic, state_of, task
from b2bscore.kit.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_FIRST_DELIVERY
from b2bscore.kit.state import AppState
from b2bscore.tenants.models import new_id, utcnow
from b2bscore.webhooks import service
from b2bscore.webhooks.delivery import attempt, retry_delay
from b2bscore.webhooks.models import WebhookAttempt, WebhookEndpoint
from b2bscore.webhooks.repository import WebhookRepository
from b2bscore.webhooks.schemas import envelope
from b2bscore.webhooks.signing import signature_header

log = logging.getLogger(__name__)

RELAY_BATCH = 1000
# One job delivers at most this many events before handing over (fairness between keys).
MAX_PER_JOB = 200


@task(name=service.DELIVER_TASK, pass_context=True, queue="webhooks")
async def deliver(context: JobContext, endpoint_id: str, ordering_key: str) -> int:
    """Deliver the pending events of one endpoint and key, in order; returns how many."""
    state = state_of(context)
    delivered = 0
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        while delivered < MAX_PER_JOB:
            step = await _deliver_next(state, client, endpoint_id, ordering_key)
            if step is None:
                return delivered
            delivered += 1
    await service.dispatch(state.jobs, [(endpoint_id, ordering_key)])
    return delivered


async def _deliver_next(
    state: AppState, client: httpx.AsyncClient, endpoint_id: str, ordering_key: str
) -> str | None:
    """Attempt the next pending delivery; its outcome, or None when there is nothing to do now."""
    settings = state.settings
    async with opened_session(state.sessionmaker) as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.status != "enabled":
            return None
        found = await WebhookRepository(session).next_delivery(endpoint_id, ordering_key)
        if found is None:
            return None
        delivery, event = found
        now = utcnow()
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            await _defer_retry(state, endpoint_id, ordering_key, delivery.next_attempt_at)
            return None
        body = orjson.dumps(envelope(event.type, event.created_at, event.data))
        timestamp = int(now.timestamp())
        headers = {
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                service.signing_secrets(state.keyring, endpoint, now), event.id, timestamp, body
            ),
        }
        url, mode = endpoint.url, endpoint.mode
        # The HTTP call runs outside any transaction: a slow endpoint holds no database lock.
        await session.commit()
    result = await attempt(
        client,
        url=url,
        mode=mode,
        headers=headers,
        body=body,
        timeout=settings.webhook_timeout_seconds,
    )
    number = delivery.attempts + 1
    outcome = result.outcome
    if outcome == "retry" and number >= settings.webhook_max_attempts:
        outcome = "failed"
    emitted = None
    async with opened_session(state.sessionmaker) as session:
        delivery = await session.merge(delivery)
        delivery.attempts = number
        delivery.last_attempt_at = utcnow()
        session.add(
            WebhookAttempt(
                id=new_id(),
                delivery_id=delivery.id,
                endpoint_id=endpoint_id,
                tenant_id=delivery.tenant_id,
                event_id=event.id,
                attempt=number,
                attempted_at=delivery.last_attempt_at,
                outcome=outcome,
                status_code=result.status_code,
                error=result.error,
                latency_ms=result.latency_ms,
                response_excerpt=result.excerpt,
            )
        )
        if outcome == "succeeded":
            delivery.status = "succeeded"
            delivery.completed_at = delivery.last_attempt_at
            delivery.next_attempt_at = None
        elif outcome == "failed":
            delivery.status = "failed"
            delivery.completed_at = delivery.last_attempt_at
            delivery.next_attempt_at = None
            if result.outcome == "retry":
                # The whole schedule went by without one success: stop sending to it.
                fresh = await session.get(WebhookEndpoint, endpoint_id)
                if fresh is not None and fresh.status == "enabled":
                    emitted = await service.disable_endpoint(
                        session,
                        fresh,
                        f"{number} attempts failed over the retry schedule (last: {result.error})",
                    )
        else:
            delivery.next_attempt_at = delivery.last_attempt_at + retry_delay(number, settings)
        next_at = delivery.next_attempt_at
        await session.commit()
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
    if outcome == "succeeded" and number == 1:
        WEBHOOK_FIRST_DELIVERY.observe((utcnow() - event.created_at).total_seconds())
    if emitted is not None:
        await service.dispatch(state.jobs, emitted)
    if outcome == "retry" and next_at is not None:
        await _defer_retry(state, endpoint_id, ordering_key, next_at)
        return None
    return outcome


async def _defer_retry(
    state: AppState, endpoint_id: str, ordering_key: str, when: datetime
) -> None:
    if state.jobs is None:
        return
    lock = service.delivery_lock(endpoint_id, ordering_key)
    await state.jobs.defer(
        service.DELIVER_TASK,
        lock=lock,
        queueing_lock=lock,
        schedule_at=when.astimezone(UTC),
        endpoint_id=endpoint_id,
        ordering_key=ordering_key,
    )


@periodic(cron="* * * * *", periodic_id="relay")
@task(name="webhooks.relay", pass_context=True, queue="webhooks", queueing_lock="webhooks.relay")
async def relay(context: JobContext, timestamp: int) -> int:
    """Re-queue every (endpoint, key) with a delivery due; returns how many were queued."""
    state = state_of(context)
    async with opened_session(state.sessionmaker) as session:
        due = await WebhookRepository(session).due(utcnow(), RELAY_BATCH)
    await service.dispatch(state.jobs, due)
    return len(due)
