"""Webhook endpoints and the event outbox: register, rotate, emit, dispatch, redeliver.

`emit_event` is what any domain calls, inside the transaction of the change that caused the
event: it writes the event and one pending delivery per subscribed endpoint, and nothing is
sent from there. After the commit, `dispatch` asks the job engine to deliver; should that
be lost (a crash between the two), the periodic relay (tasks.py) finds the due deliveries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.crypto import DataKeyring
from b2bscore.kit.jobs import Jobs
from b2bscore.kit.problems import Problem
from b2bscore.tenants.models import utcnow
from b2bscore.webhooks.models import Event, WebhookDelivery, WebhookEndpoint
from b2bscore.webhooks.repository import WebhookRepository
from b2bscore.webhooks.schemas import EVENT_TYPES, EndpointCreate
from b2bscore.webhooks.signing import new_secret
from b2bscore.webhooks.urls import UnsafeUrl, check_url

log = logging.getLogger(__name__)

DELIVER_TASK = "webhooks.deliver"


def delivery_lock(endpoint_id: str, ordering_key: str) -> str:
    """The job lock that keeps one endpoint's deliveries of one key in order."""
    return f"webhook:{endpoint_id}:{ordering_key}"


def _aad(tenant_id: str, endpoint_id: str) -> bytes:
    return f"b2bscore.webhook_secret.v1|{tenant_id}|{endpoint_id}".encode()


def _seal(keyring: DataKeyring, endpoint: WebhookEndpoint, secret: str) -> None:
    key_id, nonce, ciphertext = keyring.encrypt(
        secret.encode(), _aad(endpoint.tenant_id, endpoint.id)
    )
    endpoint.secret_key_id, endpoint.secret_nonce, endpoint.secret_ciphertext = (
        key_id,
        nonce,
        ciphertext,
    )


def signing_secrets(keyring: DataKeyring, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous in its grace."""
    aad = _aad(endpoint.tenant_id, endpoint.id)
    current = keyring.decrypt(
        endpoint.secret_key_id, endpoint.secret_nonce, endpoint.secret_ciphertext, aad
    ).decode()
    result = [current]
    if (
        endpoint.previous_ciphertext is not None
        and endpoint.previous_nonce is not None
        and endpoint.previous_key_id is not None
        and endpoint.previous_expires_at is not None
        and endpoint.previous_expires_at > now
    ):
        result.append(
            keyring.decrypt(
                endpoint.previous_key_id, endpoint.previous_nonce, endpoint.previous_ciphertext, aad
            ).decode()
        )
    return result


def _invalid_url(error: UnsafeUrl) -> Problem:
    return Problem(
        422,
        "validation_error",
        "Invalid webhook URL",
        f"url {error}",
        errors=[{"field": "url", "message": str(error)}],
    )


async def create_endpoint(
    session: AsyncSession,
    keyring: DataKeyring,
    *,
    tenant_id: str,
    mode: str,
    body: EndpointCreate,
    max_endpoints: int,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret in clear (shown once); the caller commits."""
    try:
        check_url(body.url, mode)
    except UnsafeUrl as error:
        raise _invalid_url(error) from error
    if len(await WebhookRepository(session).endpoints(tenant_id, mode)) >= max_endpoints:
        raise Problem(
            409,
            "too_many_endpoints",
            "Too many webhook endpoints",
            f"A tenant may register at most {max_endpoints} endpoints per mode.",
        )
    now = utcnow()
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        mode=mode,
        url=body.url,
        description=body.description,
        event_types=sorted(set(body.event_types)),
        status="enabled",
        created_at=now,
        updated_at=now,
    )
    endpoint.id = endpoint.id or _new_id()
    secret = new_secret()
    _seal(keyring, endpoint, secret)
    session.add(endpoint)
    await session.flush()
    return endpoint, secret


def _new_id() -> str:
    from b2bscore.tenants.models import new_id

    return new_id()


async def rotate_secret(keyring: DataKeyring, endpoint: WebhookEndpoint, grace_seconds: int) -> str:
    """A new secret; the current one keeps signing for grace_seconds. The caller commits."""
    now = utcnow()
    endpoint.previous_key_id = endpoint.secret_key_id
    endpoint.previous_nonce = endpoint.secret_nonce
    endpoint.previous_ciphertext = endpoint.secret_ciphertext
    endpoint.previous_expires_at = now + timedelta(seconds=grace_seconds) if grace_seconds else None
    secret = new_secret()
    _seal(keyring, endpoint, secret)
    endpoint.updated_at = now
    return secret


@dataclass(slots=True)
class Emitted:
    """Events written in a transaction, and the deliveries to start once it commits."""

    events: list[Event] = field(default_factory=list)
    kicks: set[tuple[str, str]] = field(default_factory=set)

    def merge(self, other: Emitted) -> None:
        """Add other's events and deliveries to these."""
        self.events.extend(other.events)
        self.kicks |= other.kicks


async def emit_event(
    session: AsyncSession,
    *,
    tenant_id: str,
    mode: str,
    event_type: str,
    ordering_key: str,
    data: dict[str, Any] | Any,
    now: datetime | None = None,
    exclude_endpoint: str | None = None,
) -> Emitted:
    """Write an event and its pending deliveries in the caller's transaction (not committed)."""
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise ValueError(f"unknown event type {event_type!r}")
    payload = model.model_validate(data).model_dump(mode="json")
    now = now or utcnow()
    event = Event(
        tenant_id=tenant_id,
        mode=mode,
        type=event_type,
        ordering_key=ordering_key,
        data=payload,
        created_at=now,
    )
    event.id = event.id or _new_event_id()
    session.add(event)
    emitted = Emitted(events=[event])
    for endpoint_id in await WebhookRepository(session).subscribers(tenant_id, mode, event_type):
        if endpoint_id == exclude_endpoint:
            continue
        session.add(
            WebhookDelivery(
                id=_new_id(),
                tenant_id=tenant_id,
                endpoint_id=endpoint_id,
                event_id=event.id,
                ordering_key=ordering_key,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        emitted.kicks.add((endpoint_id, ordering_key))
    await session.flush()
    return emitted


def _new_event_id() -> str:
    from b2bscore.webhooks.models import new_event_id

    return new_event_id()


async def dispatch(jobs: Jobs | None, emitted: Emitted | Iterable[tuple[str, str]]) -> None:
    """After the commit: ask the job engine to deliver (best effort; the relay catches up)."""
    if jobs is None:
        return
    kicks = emitted.kicks if isinstance(emitted, Emitted) else set(emitted)
    for endpoint_id, ordering_key in sorted(kicks):
        lock = delivery_lock(endpoint_id, ordering_key)
        try:
            await jobs.defer(
                DELIVER_TASK,
                lock=lock,
                queueing_lock=lock,
                endpoint_id=endpoint_id,
                ordering_key=ordering_key,
            )
        except Exception as error:  # the outbox row is committed: the relay delivers it
            log.warning("could not queue a delivery now: %s", type(error).__name__)


@dataclass(frozen=True, slots=True)
class Redelivered:
    """A delivery put back in the queue, and the type of its event."""

    delivery: WebhookDelivery
    event_type: str


async def redeliver(
    session: AsyncSession, jobs: Jobs | None, endpoint: WebhookEndpoint, delivery_id: str
) -> Redelivered | None:
    """Send a delivery again (a new round of attempts): reset, commit, queue; None if unknown.

    The one path of the API's POST .../redeliver and of the console's Redeliver button.
    """
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint.id:
        return None
    delivery.status = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.completed_at = None
    event = await session.get(Event, delivery.event_id)
    await session.commit()
    if jobs is not None:
        # No queueing lock: a retry already waiting for hours must not hold this one back.
        await jobs.defer(
            DELIVER_TASK,
            lock=delivery_lock(endpoint.id, delivery.ordering_key),
            endpoint_id=endpoint.id,
            ordering_key=delivery.ordering_key,
        )
    return Redelivered(delivery, event.type if event is not None else "")


async def disable_endpoint(
    session: AsyncSession, endpoint: WebhookEndpoint, reason: str
) -> Emitted:
    """Disable a failing endpoint and tell the tenant (an event to its other endpoints)."""
    now = utcnow()
    endpoint.status = "disabled"
    endpoint.disabled_reason = reason[:300]
    endpoint.disabled_at = now
    endpoint.updated_at = now
    await session.flush()
    return await emit_event(
        session,
        tenant_id=endpoint.tenant_id,
        mode=endpoint.mode,
        event_type="webhook_endpoint.disabled",
        ordering_key=f"endpoint:{endpoint.id}",
        data={
            "endpoint_id": endpoint.id,
            "url": endpoint.url,
            "reason": endpoint.disabled_reason,
            "disabled_at": now,
        },
        now=now,
        exclude_endpoint=endpoint.id,
    )


async def enable_endpoint(
    session: AsyncSession, endpoint: WebhookEndpoint
) -> list[tuple[str, str]]:
    """Enable an endpoint again; its pending deliveries resume (returned to dispatch)."""
    endpoint.status = "enabled"
    endpoint.disabled_reason = None
    endpoint.disabled_at = None
    endpoint.updated_at = utcnow()
    await session.flush()
    from sqlalchemy import select

    keys = await session.scalars(
        select(WebhookDelivery.ordering_key)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "pending")
        .distinct()
    )
    return [(endpoint.id, key) for key in keys.all()]


def event_ids(emitted: Sequence[Event]) -> list[str]:
    """Ids of events (for logs and tests)."""
    return [e.id for e in emitted]
