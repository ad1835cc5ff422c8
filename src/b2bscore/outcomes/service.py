"""Record what became of a decided credit: once, idempotently, within its tenant and mode."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.models import Decision
from b2bscore.outcomes.models import DecisionOutcome
from b2bscore.tenants.auth import Principal


class DecisionNotFound(Exception):
    """No decision of this tenant and mode has this id."""


class OutcomeConflict(Exception):
    """The decision already has a different outcome."""

    def __init__(self, existing: DecisionOutcome) -> None:
        super().__init__(existing.outcome)
        self.existing = existing


class OutcomeDateInvalid(Exception):
    """The outcome's date is before the decision or in the future."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome row and whether this call created it."""

    row: DecisionOutcome
    created: bool


async def _decision_of(session: AsyncSession, principal: Principal, decision_id: str) -> Decision:
    row = await session.execute(
        select(Decision.id, Decision.created_at).where(
            Decision.id == decision_id,
            Decision.tenant_id == principal.tenant_id,
            # Test and live never mix: a test key cannot label a live decision.
            Decision.mode == principal.mode,
        )
    )
    found = row.first()
    if found is None:
        raise DecisionNotFound(decision_id)
    return Decision(id=found[0], created_at=found[1])


async def get_outcome(
    session: AsyncSession, principal: Principal, decision_id: str
) -> DecisionOutcome | None:
    """The outcome of one decision of the caller's tenant and mode."""
    await _decision_of(session, principal, decision_id)
    return await session.get(DecisionOutcome, decision_id)


async def record_outcome(
    session: AsyncSession, principal: Principal, decision_id: str, outcome: str, when: date
) -> Recorded:
    """Insert the outcome; the same one again is returned as it was, a different one conflicts."""
    decision = await _decision_of(session, principal, decision_id)
    if when < decision.created_at.date() or when > datetime.now(UTC).date():
        raise OutcomeDateInvalid(when.isoformat())
    existing = await session.get(DecisionOutcome, decision_id)
    if existing is None:
        row = DecisionOutcome(
            decision_id=decision_id,
            tenant_id=principal.tenant_id,
            mode=principal.mode,
            outcome=outcome,
            outcome_date=when,
            recorded_at=datetime.now(UTC),
            api_key_id=principal.key_id,
        )
        session.add(row)
        try:
            await session.commit()
            return Recorded(row, created=True)
        except IntegrityError:
            # A concurrent call recorded one first: judge this call against it.
            await session.rollback()
            existing = await session.get(DecisionOutcome, decision_id)
            if existing is None:
                raise
    if (existing.outcome, existing.outcome_date) != (outcome, when):
        raise OutcomeConflict(existing)
    return Recorded(existing, created=False)
