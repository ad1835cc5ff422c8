"""Read API of the audit store: one decision, or a filtered, paginated list."""

from __future__ import annotations

import base64
import binascii
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime

from b2bscore.decisions.chain import read_problem
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.models import Decision
from b2bscore.decisions.replay import ReplayUnavailable, bundle_for, replay_decision
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.decisions.schemas import DecisionOut, DecisionPage, DifferenceOut, ModelRef, ReplayOut
from b2bscore.kit.db import opened_session
from b2bscore.kit.deadline import request_deadline, within
from b2bscore.kit.deps import Sessions, State, app_state
from b2bscore.kit.problems import Problem
from b2bscore.model.models import ShadowScore
from b2bscore.model.schemas import ShadowOut
from b2bscore.model.service import shadow_of
from b2bscore.tenants.auth import requires
from b2bscore.tenants.service import Principal

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])


# Reads count against the key's limit too: listing and probing ids is what a stolen key
# would do at volume.
DecisionsReader = Annotated[Principal, requires("decisions:read", rate_limited=True)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_READ_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _PROBLEM,
    403: _PROBLEM,
    404: _PROBLEM,
    422: _PROBLEM,
    503: _PROBLEM,
}


_T = TypeVar("_T")


async def _read(
    request: Request, sessions: Sessions, work: Callable[[DecisionRepository], Awaitable[_T]]
) -> _T:
    """work on the audit store, answered 503 by the request's deadline if the store stalls."""

    async def unit() -> _T:
        async with opened_session(sessions) as session:
            return await work(DecisionRepository(session))

    return await within(request_deadline(request), unit(), store="database")


# Ids already reported, so that a client reading a damaged row in a loop does not flood
# the log; bounded, a process forgets the oldest first.
_REPORTED: OrderedDict[str, None] = OrderedDict()
_REPORTED_MAX = 1024


async def get_chain_keys(request: Request) -> ChainKeyring:
    """The audit chain keys, to check a row before it is served (dependency)."""
    return app_state(request).chain_keys


ChainKeys = Annotated[ChainKeyring, Depends(get_chain_keys)]


async def _intact(
    repository: DecisionRepository, decision: Decision, chain_keys: ChainKeyring
) -> Decision:
    """The decision, once its row verifies; 409 integrity_error (logged once) otherwise."""
    reason = await read_problem(repository, decision, chain_keys)
    if reason is None:
        return decision
    if decision.id not in _REPORTED:
        _REPORTED[decision.id] = None
        if len(_REPORTED) > _REPORTED_MAX:
            _REPORTED.popitem(last=False)
        # Ids only: nothing about the company or the decision itself.
        log.error(
            "audit row failed its integrity check: tenant=%s mode=%s decision=%s seq=%s reason=%s",
            decision.tenant_id,
            decision.mode,
            decision.id,
            decision.seq,
            reason,
        )
    raise Problem(
        409,
        "integrity_error",
        "Decision record failed its integrity check",
        "The stored record of this decision does not match its audit chain; it is not "
        "served. The operator has been alerted.",
    )


async def _get_intact(
    decisions: DecisionRepository, principal: Principal, decision_id: str, chain_keys: ChainKeyring
) -> Decision | None:
    """The caller's decision of its own mode once its row verifies, or None."""
    decision = await decisions.get(principal.tenant_id, decision_id, mode=principal.mode)
    return None if decision is None else await _intact(decisions, decision, chain_keys)


def _not_found() -> Problem:
    # Same answer for another tenant's id, or another mode's, as for an unknown one.
    return Problem(404, "decision_not_found", "Decision not found")


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(cursor)
        seq = int(raw[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(
            422,
            "validation_error",
            "Invalid request",
            "Invalid fields: cursor",
            errors=[{"field": "cursor", "message": "Unknown cursor", "type": "value_error"}],
        ) from None
    return seq


@router.get(
    "/{decision_id}", response_model=DecisionOut, responses={**_READ_PROBLEMS, 409: _PROBLEM}
)
async def get_decision(
    request: Request,
    decision_id: str,
    principal: DecisionsReader,
    sessions: Sessions,
    chain_keys: ChainKeys,
) -> DecisionOut:
    """One decision of the caller's tenant, in the caller's mode (test or live)."""

    async def read(decisions: DecisionRepository) -> tuple[Decision | None, ShadowScore | None]:
        decision = await _get_intact(decisions, principal, decision_id, chain_keys)
        if decision is None:
            return None, None
        # The challenger's score, when one was recorded beside the decision.
        return decision, await shadow_of(decisions.session, principal.tenant_id, decision_id)

    decision, shadow = await _read(request, sessions, read)
    if decision is None:
        raise _not_found()
    out = DecisionOut.from_decision(decision)
    if shadow is not None:
        out.shadow = ShadowOut.from_row(shadow)
    return out


@router.post(
    "/{decision_id}/replay",
    response_model=ReplayOut,
    responses={**_READ_PROBLEMS, 409: _PROBLEM},
    summary="Recompute a decision from its stored features with its stored model",
)
async def replay(
    request: Request,
    decision_id: str,
    principal: DecisionsReader,
    sessions: Sessions,
    state: State,
    chain_keys: ChainKeys,
) -> ReplayOut:
    """Replay one decision of the caller's tenant and mode; list what differs from the record."""
    # A replay of a tampered record would "prove" whatever the tamperer wrote.
    decision = await _read(
        request,
        sessions,
        lambda decisions: _get_intact(decisions, principal, decision_id, chain_keys),
    )
    if decision is None:
        raise _not_found()
    try:
        bundle = await bundle_for(decision, state.bundles, state.settings.models_dir)
        result = replay_decision(decision, bundle)
    except ReplayUnavailable as error:
        raise Problem(
            409, "replay_unavailable", "Decision cannot be replayed", str(error)
        ) from None
    return ReplayOut(
        decision_id=result.decision_id,
        identical=result.identical,
        differences=[
            DifferenceOut(field=d.field, recorded=d.recorded, replayed=d.replayed)
            for d in result.differences
        ],
        model=ModelRef(id=result.model_id, version=result.model_version),
    )


@router.get("", response_model=DecisionPage, responses=_READ_PROBLEMS)
async def list_decisions(
    request: Request,
    principal: DecisionsReader,
    sessions: Sessions,
    siren: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    decision: Annotated[str | None, Query(max_length=16)] = None,
    created_from: AwareDatetime | None = None,
    created_to: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> DecisionPage:
    """The caller's decisions of its own mode, newest first, filtered, keyset-paginated."""
    after = _decode_cursor(cursor) if cursor else None
    rows = await _read(
        request,
        sessions,
        lambda decisions: decisions.list(
            principal.tenant_id,
            mode=principal.mode,
            siren=siren,
            decision=decision,
            created_from=created_from,
            created_to=created_to,
            # One extra row tells whether another page exists.
            limit=limit + 1,
            after=after,
        ),
    )
    items = [DecisionOut.from_decision(row) for row in rows[:limit]]
    next_cursor = _encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return DecisionPage(items=items, next_cursor=next_cursor)
