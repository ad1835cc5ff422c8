"""POST /v1/decisions/{id}/outcome: what became of a decided credit (closes the loop)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response

from b2bscore.kit.deps import DbSession
from b2bscore.kit.problems import Problem
from b2bscore.outcomes import service
from b2bscore.outcomes.schemas import OutcomeIn, OutcomeOut
from b2bscore.tenants.auth import requires
from b2bscore.tenants.service import Principal

router = APIRouter(prefix="/v1/decisions", tags=["outcomes"])

# Recording an outcome writes, so it takes the writing scope a lender's back office holds.
OutcomeWriter = Annotated[Principal, requires("score:write", rate_limited=True)]
OutcomeReader = Annotated[Principal, requires("decisions:read", rate_limited=True)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def _not_found() -> Problem:
    return Problem(404, "decision_not_found", "Decision not found")


@router.post(
    "/{decision_id}/outcome",
    response_model=OutcomeOut,
    status_code=201,
    responses={
        200: {"model": OutcomeOut, "description": "The same outcome was already recorded."},
        401: _PROBLEM,
        403: _PROBLEM,
        404: _PROBLEM,
        409: _PROBLEM,
        422: _PROBLEM,
    },
    summary="Record what became of a decided credit (once; the same outcome again is 200)",
)
async def record_outcome(
    decision_id: str,
    body: OutcomeIn,
    principal: OutcomeWriter,
    session: DbSession,
    response: Response,
) -> OutcomeOut:
    """Record repaid, default or written_off with its date; idempotent."""
    try:
        recorded = await service.record_outcome(
            session, principal, decision_id, body.outcome, body.date
        )
    except service.DecisionNotFound:
        raise _not_found() from None
    except service.OutcomeDateInvalid:
        raise Problem(
            422,
            "validation_error",
            "Invalid request",
            "Invalid fields: date",
            errors=[
                {
                    "field": "date",
                    "message": "must be on or after the decision's date and not in the future",
                    "type": "value_error",
                }
            ],
        ) from None
    except service.OutcomeConflict as conflict:
        raise Problem(
            409,
            "outcome_conflict",
            "A different outcome is already recorded",
            f"This decision's outcome is {conflict.existing.outcome} on "
            f"{conflict.existing.outcome_date.isoformat()}; outcomes are not rewritten.",
        ) from None
    if not recorded.created:
        response.status_code = 200
    return OutcomeOut.from_row(recorded.row)


@router.get(
    "/{decision_id}/outcome",
    response_model=OutcomeOut,
    responses={401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM},
    summary="The recorded outcome of a decision",
)
async def read_outcome(
    decision_id: str, principal: OutcomeReader, session: DbSession
) -> OutcomeOut:
    """The outcome of one decision of the caller's tenant and mode."""
    try:
        row = await service.get_outcome(session, principal, decision_id)
    except service.DecisionNotFound:
        raise _not_found() from None
    if row is None:
        raise Problem(404, "outcome_not_found", "No outcome recorded for this decision")
    return OutcomeOut.from_row(row)
