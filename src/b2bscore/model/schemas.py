"""Wire shapes the model registry adds to the decisions API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from b2bscore.model.models import ShadowScore


class ShadowModelRef(BaseModel):
    """Which bundle scored in shadow."""

    id: str
    version: str


class ShadowOut(BaseModel):
    """What the shadow model said about this decision (never answered to anyone)."""

    model: ShadowModelRef
    probability_of_default: float
    score: int
    grade: str
    decision: str
    scored_at: datetime = Field(description="When the shadow scored it, after the answer.")

    @classmethod
    def from_row(cls, row: ShadowScore) -> ShadowOut:
        """The wire form of a shadow score."""
        return cls(
            model=ShadowModelRef(id=row.model_id, version=row.model_version),
            probability_of_default=float(row.probability_of_default),
            score=row.score,
            grade=row.grade,
            decision=row.decision,
            scored_at=row.created_at,
        )
