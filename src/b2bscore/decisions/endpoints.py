"""Read API of the audit store: one decision, or a filtered, paginated list."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from b2bscore.decisions.replay import ReplayUnavailable, bundle_for, replay_decision
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.decisions.schemas import DecisionOut, DecisionPage, DifferenceOut, ModelRef, ReplayOut
from b2bscore.kit.deps import DbSession, State
from b2bscore.kit.problems import Problem
from b2bscore.model.schemas import ShadowOut
from b2bscore.model.service import shadow_of
from b2bscore.tenants.auth import requires
from b2bscore.tenants.service import Principal

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


def _not_found() -> Problem:
    # Same answer for another tenant's id as for an unknown one.
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


@router.get("/{decision_id}", response_model=DecisionOut, responses=_READ_PROBLEMS)
async def get_decision(
    decision_id: str, principal: DecisionsReader, session: DbSession
) -> DecisionOut:
    """One decision of the caller's tenant."""
    decision = await DecisionRepository(session).get(principal.tenant_id, decision_id)
    if decision is None:
        raise _not_found()
    out = DecisionOut.from_decision(decision)
    shadow = await shadow_of(session, principal.tenant_id, decision_id)
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
    decision_id: str, principal: DecisionsReader, session: DbSession, state: State
) -> ReplayOut:
    """Replay one decision of the caller's tenant and list what differs from the record."""
    decision = await DecisionRepository(session).get(principal.tenant_id, decision_id)
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
    principal: DecisionsReader,
    session: DbSession,
    siren: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    decision: Annotated[str | None, Query(max_length=16)] = None,
    created_from: AwareDatetime | None = None,
    created_to: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> DecisionPage:
    """The caller's decisions, newest first, filtered, with keyset pagination."""
    after = _decode_cursor(cursor) if cursor else None
    rows = await DecisionRepository(session).list(
        principal.tenant_id,
        siren=siren,
        decision=decision,
        created_from=created_from,
        created_to=created_to,
        # One extra row tells whether another page exists.
        limit=limit + 1,
        after=after,
    )
    items = [DecisionOut.from_decision(row) for row in rows[:limit]]
    next_cursor = _encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return DecisionPage(items=items, next_cursor=next_cursor)
