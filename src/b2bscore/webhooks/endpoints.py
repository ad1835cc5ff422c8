"""/v1/webhook-endpoints: register, list, read, delete, rotate, deliveries, redeliver."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from b2bscore.kit.deps import DbSession, State
from b2bscore.kit.problems import Problem
from b2bscore.tenants.auth import requires
from b2bscore.tenants.service import Principal
from b2bscore.webhooks import service
from b2bscore.webhooks.models import WebhookEndpoint
from b2bscore.webhooks.repository import WebhookRepository
from b2bscore.webhooks.schemas import (
    AttemptOut,
    DeliveryList,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointOut,
    RotateSecret,
    SecretRotated,
)

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])

# Registering an endpoint decides where the tenant's data goes: the writing scope.
Manager = Annotated[Principal, requires("score:write", rate_limited=True)]
Reader = Annotated[Principal, requires("decisions:read", rate_limited=True)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: _PROBLEM for s in (401, 403, 404, 409, 413, 415, 422, 429, 503)
}


def _out(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "mode": endpoint.mode,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": endpoint.disabled_at,
        "previous_secret_expires_at": endpoint.previous_expires_at,
        "created_at": endpoint.created_at,
    }


async def _endpoint(session: DbSession, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await WebhookRepository(session).endpoint(
        principal.tenant_id, principal.mode, endpoint_id
    )
    if endpoint is None:
        # Same answer for another tenant's (or the other mode's) endpoint as for none.
        raise Problem(404, "webhook_endpoint_not_found", "Webhook endpoint not found")
    return endpoint


@router.post("", status_code=201, response_model=EndpointCreated, responses=_PROBLEMS)
async def create_endpoint(
    body: EndpointCreate, principal: Manager, session: DbSession, state: State
) -> EndpointCreated:
    """Register a URL for the given event types; the signing secret is shown this once."""
    endpoint, secret = await service.create_endpoint(
        session,
        state.keyring,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        body=body,
        max_endpoints=state.settings.webhook_max_endpoints,
    )
    await session.commit()
    return EndpointCreated.model_validate({**_out(endpoint), "secret": secret})


@router.get("", response_model=EndpointList, responses=_PROBLEMS)
async def list_endpoints(principal: Reader, session: DbSession) -> EndpointList:
    """The tenant's endpoints in the caller's mode."""
    rows = await WebhookRepository(session).endpoints(principal.tenant_id, principal.mode)
    return EndpointList(data=[EndpointOut.model_validate(_out(e)) for e in rows])


@router.get("/{endpoint_id}", response_model=EndpointOut, responses=_PROBLEMS)
async def read_endpoint(endpoint_id: str, principal: Reader, session: DbSession) -> EndpointOut:
    """One endpoint, with its status (disabled endpoints say why)."""
    return EndpointOut.model_validate(_out(await _endpoint(session, principal, endpoint_id)))


@router.delete("/{endpoint_id}", status_code=204, responses=_PROBLEMS)
async def delete_endpoint(endpoint_id: str, principal: Manager, session: DbSession) -> Response:
    """Remove an endpoint; its pending deliveries and their log go with it."""
    endpoint = await _endpoint(session, principal, endpoint_id)
    await session.delete(endpoint)
    await session.commit()
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=SecretRotated, responses=_PROBLEMS)
async def rotate_secret(
    endpoint_id: str,
    principal: Manager,
    session: DbSession,
    state: State,
    body: RotateSecret | None = None,
) -> SecretRotated:
    """A new signing secret; the old one keeps signing beside it for the grace period."""
    endpoint = await _endpoint(session, principal, endpoint_id)
    grace = (
        body.grace_period_seconds
        if body is not None and body.grace_period_seconds is not None
        else state.settings.webhook_secret_grace_seconds
    )
    secret = await service.rotate_secret(state.keyring, endpoint, grace)
    await session.commit()
    return SecretRotated(
        id=endpoint.id, secret=secret, previous_secret_expires_at=endpoint.previous_expires_at
    )


@router.post("/{endpoint_id}/enable", response_model=EndpointOut, responses=_PROBLEMS)
async def enable_endpoint(
    endpoint_id: str, principal: Manager, session: DbSession, state: State
) -> EndpointOut:
    """Enable a disabled endpoint; the deliveries it missed resume, in order."""
    endpoint = await _endpoint(session, principal, endpoint_id)
    kicks = await service.enable_endpoint(session, endpoint)
    await session.commit()
    await service.dispatch(state.jobs, kicks)
    return EndpointOut.model_validate(_out(endpoint))


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList, responses=_PROBLEMS)
async def list_deliveries(
    endpoint_id: str,
    principal: Reader,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Literal["pending", "succeeded", "failed"] | None = None,
) -> DeliveryList:
    """The endpoint's deliveries, newest first, each with every attempt made."""
    endpoint = await _endpoint(session, principal, endpoint_id)
    repository = WebhookRepository(session)
    rows = await repository.deliveries(endpoint.id, limit, status)
    attempts = await repository.attempts([d.id for d, _ in rows])
    by_delivery: dict[str, list[AttemptOut]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(
            AttemptOut(
                attempt=a.attempt,
                attempted_at=a.attempted_at,
                outcome=a.outcome,
                status_code=a.status_code,
                error=a.error,
                latency_ms=a.latency_ms,
                response_excerpt=a.response_excerpt,
            )
        )
    return DeliveryList(
        data=[
            DeliveryOut(
                id=d.id,
                event_id=d.event_id,
                event_type=event_type,
                status=d.status,
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at,
                created_at=d.created_at,
                completed_at=d.completed_at,
                attempt_log=by_delivery.get(d.id, []),
            )
            for d, event_type in rows
        ]
    )


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    responses=_PROBLEMS,
)
async def redeliver(
    endpoint_id: str, delivery_id: str, principal: Manager, session: DbSession, state: State
) -> DeliveryOut:
    """Send an event again (a new round of attempts), whatever its earlier outcome."""
    endpoint = await _endpoint(session, principal, endpoint_id)
    redelivered = await service.redeliver(session, state.jobs, endpoint, delivery_id)
    if redelivered is None:
        raise Problem(404, "webhook_delivery_not_found", "Delivery not found")
    delivery = redelivered.delivery
    return DeliveryOut(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=redelivered.event_type,
        status="pending",
        attempts=0,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        completed_at=None,
        attempt_log=[],
    )
