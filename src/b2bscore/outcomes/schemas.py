"""Wire shapes of the outcome API."""

from __future__ import annotations

import datetime as dt
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from b2bscore.outcomes.models import DecisionOutcome

OutcomeKind = Literal["repaid", "default", "written_off"]


class OutcomeIn(BaseModel):
    """What became of the credit a decision was about."""

    model_config = ConfigDict(extra="forbid")

    outcome: OutcomeKind = Field(description="repaid, default (90+ days past due) or written_off.")
    date: dt.date = Field(description="When it happened: from the decision's date to today.")


class OutcomeOut(BaseModel):
    """The recorded outcome of a decision."""

    decision_id: str
    outcome: OutcomeKind
    date: dt.date
    mode: str
    recorded_at: dt.datetime

    @classmethod
    def from_row(cls, row: DecisionOutcome) -> OutcomeOut:
        """The wire form of an outcome row."""
        return cls(
            decision_id=row.decision_id,
            # The table's check constraint keeps it one of OutcomeKind; pydantic checks again.
            outcome=cast(OutcomeKind, row.outcome),
            date=row.outcome_date,
            mode=row.mode,
            recorded_at=row.recorded_at,
        )
