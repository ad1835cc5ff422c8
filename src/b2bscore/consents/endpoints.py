"""/v1/consents: ask a company for open-banking consent, read, sync and revoke it."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse

from b2bscore.consents import service
from b2bscore.consents.repository import ConsentRepository
from b2bscore.consents.schemas import (
    ConsentCreate,
    ConsentCreated,
    ConsentOut,
    ConsentPage,
    RedirectIn,
    RedirectList,
    RedirectOut,
    SyncQueued,
)
from b2bscore.kit.deps import DbSession, State
from b2bscore.kit.problems import Problem
from b2bscore.tenants.auth import requires
from b2bscore.tenants.models import utcnow
from b2bscore.tenants.service import Principal

router = APIRouter(prefix="/v1/consents", tags=["consents"])

Manager = Annotated[Principal, requires("score:write", rate_limited=True)]
Reader = Annotated[Principal, requires("decisions:read", rate_limited=True)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM}


def _not_found(consent_id: str) -> Problem:
    return Problem(404, "not_found", "Consent not found", f"No consent {consent_id}.")


def _http() -> httpx.AsyncClient:
    # The banks' OAuth endpoints: rare calls, never redirected, no proxy from the env.
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


@router.post(
    "",
    status_code=201,
    response_model=ConsentCreated,
    responses={**_ERRORS, 422: _PROBLEM},
    summary="Ask a company for open-banking consent at its bank",
)
async def create_consent(
    body: ConsentCreate, principal: Manager, session: DbSession, state: State
) -> ConsentCreated:
    """A pending consent and the bank's authorization URL for the company's user."""
    consent, url = await service.create_consent(
        session,
        state.settings,
        state.keyring,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        key_id=principal.key_id,
        body=body,
        now=utcnow(),
    )
    await session.commit()
    return ConsentCreated(**service.consent_out(consent).model_dump(), authorization_url=url)


@router.get(
    "/callback",
    status_code=303,
    responses={303: {"description": "Back to the lender's redirect_uri"}, 400: _PROBLEM},
    summary="The banks' OAuth redirect (the company's browser lands here)",
)
async def callback(
    state: State,
    session: DbSession,
    oauth_state: Annotated[str, Query(alias="state", max_length=200)] = "",
    code: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    """Check the state, exchange the code, then send the user back to the lender."""
    async with _http() as http:
        consent = await service.complete_consent(
            session,
            state.settings,
            state.keyring,
            http,
            state=oauth_state,
            code=code,
            error=error,
            now=utcnow(),
        )
    if consent.status == "active":
        # Decisions in this process use it at once (others within the index's ttl).
        service.consent_index(state.sessionmaker, state.settings.consent_index_seconds).add(
            consent.tenant_id, consent.mode, consent.siren
        )
        await service.queue_sync(state.jobs, consent.id)
    elif consent.status == "pending":  # the bank's token endpoint failed: retried
        await service.queue_exchange(state.jobs, consent.id)
    return RedirectResponse(service.lender_redirect(consent), status_code=303)


Admin = Annotated[Principal, requires("admin", rate_limited=True)]


@router.get(
    "/redirect-uris",
    response_model=RedirectList,
    responses=_ERRORS,
    summary="The tenant's allowed redirect_uris in this mode",
)
async def list_redirects(principal: Reader, session: DbSession) -> RedirectList:
    """Where consents of this tenant and mode may send the company's user back to."""
    rows = await ConsentRepository(session).redirects(principal.tenant_id, principal.mode)
    return RedirectList(items=[RedirectOut(uri=r.uri, created_at=r.created_at) for r in rows])


@router.post(
    "/redirect-uris",
    status_code=201,
    response_model=RedirectOut,
    responses={**_ERRORS, 422: _PROBLEM},
    summary="Allow a redirect_uri for this tenant's consents (admin keys)",
)
async def allow_redirect(body: RedirectIn, principal: Admin, session: DbSession) -> RedirectOut:
    """Put an exact redirect_uri on the allow-list (https only with a live key)."""
    now = utcnow()
    try:
        await service.allow_redirect(session, principal.tenant_id, principal.mode, body.uri, now)
    except ValueError as error:
        raise Problem(
            422,
            "validation_error",
            "Invalid request",
            "Invalid fields: uri",
            errors=[{"field": "uri", "message": str(error), "type": "value_error"}],
        ) from error
    await session.commit()
    return RedirectOut(uri=body.uri, created_at=now)


@router.delete(
    "/redirect-uris",
    status_code=204,
    responses={**_ERRORS, 422: _PROBLEM},
    summary="Take a redirect_uri off this tenant's allow-list (admin keys)",
)
async def remove_redirect(
    principal: Admin,
    session: DbSession,
    uri: Annotated[str, Query(min_length=8, max_length=2048)],
) -> None:
    """New consents may no longer send users back there (pending ones keep theirs)."""
    repository = ConsentRepository(session)
    if not await repository.remove_redirect(principal.tenant_id, principal.mode, uri):
        raise Problem(404, "not_found", "Not on the allow-list", "No such redirect_uri.")
    await session.commit()


def _encode_cursor(consent: ConsentOut) -> str:
    raw = f"{consent.created_at.isoformat()}|{consent.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, consent_id = raw.partition("|")
        return datetime.fromisoformat(when), consent_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise Problem(
            422,
            "validation_error",
            "Invalid request",
            "Invalid fields: cursor",
            errors=[{"field": "cursor", "message": "not a cursor of this list"}],
        ) from error


@router.get("", response_model=ConsentPage, responses=_ERRORS, summary="List consents")
async def list_consents(
    principal: Reader,
    session: DbSession,
    state: State,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ConsentPage:
    """The caller's consents in its mode, newest first."""
    before = _decode_cursor(cursor) if cursor else None
    rows = await ConsentRepository(session).page(principal.tenant_id, principal.mode, limit, before)
    items = [service.consent_out(c, state.keyring) for c in rows]
    next_cursor = _encode_cursor(items[-1]) if len(items) == limit else None
    return ConsentPage(items=items, next_cursor=next_cursor)


@router.get("/{consent_id}", response_model=ConsentOut, responses=_ERRORS, summary="A consent")
async def get_consent(
    consent_id: str, principal: Reader, session: DbSession, state: State
) -> ConsentOut:
    """One consent of the caller's tenant and mode."""
    consent = await ConsentRepository(session).get(principal.tenant_id, principal.mode, consent_id)
    if consent is None:
        raise _not_found(consent_id)
    return service.consent_out(consent, state.keyring)


@router.post(
    "/{consent_id}/sync",
    status_code=202,
    response_model=SyncQueued,
    responses={**_ERRORS, 409: _PROBLEM},
    summary="Sync the consent's bank data now",
)
async def sync_now(
    consent_id: str, principal: Manager, session: DbSession, state: State
) -> SyncQueued:
    """Queue a sync of an active consent (one waits at most; one runs at a time)."""
    consent = await ConsentRepository(session).get(principal.tenant_id, principal.mode, consent_id)
    if consent is None:
        raise _not_found(consent_id)
    if consent.status != "active":
        raise Problem(
            409, "consent_not_active", "Consent not active", f"The consent is {consent.status}."
        )
    return SyncQueued(
        consent_id=consent_id, queued=await service.queue_sync(state.jobs, consent_id)
    )


@router.delete(
    "/{consent_id}",
    response_model=ConsentOut,
    responses=_ERRORS,
    summary="Revoke a consent and purge its tokens and bank data",
)
async def revoke(
    consent_id: str, principal: Manager, session: DbSession, state: State
) -> ConsentOut:
    """Revoke at the bank where supported; tokens and synced data are gone at once."""
    consent = await ConsentRepository(session).get(principal.tenant_id, principal.mode, consent_id)
    if consent is None:
        raise _not_found(consent_id)
    async with _http() as http:
        await service.revoke_consent(
            session,
            state.settings,
            state.keyring,
            http,
            consent,
            actor=principal.key_id,
            now=utcnow(),
        )
    return service.consent_out(consent)
