"""Wire shapes of the audit store's read API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from b2bscore.decisions.models import Decision
from b2bscore.model.schemas import ShadowOut


class ModelRef(BaseModel):
    """Which model bundle decided."""

    id: str
    version: str


class DecisionOut(BaseModel):
    """One recorded decision, as it was answered, with its place in the hash chain."""

    decision_id: str
    seq: int = Field(description="Position in the tenant's audit chain of this mode, from 1.")
    created_at: datetime
    mode: str
    siren: str
    product: str
    requested_amount: str = Field(description="EUR, decimal string.", examples=["25000.00"])
    probability_of_default: float
    score: int
    grade: str
    decision: str
    proposed_limit: str = Field(description="EUR, decimal string.", examples=["20000.00"])
    reasons: list[dict[str, Any]]
    sources: dict[str, Any]
    degraded: bool
    model: ModelRef
    features: dict[str, Any]
    latency_ms: float
    prev_hash: str
    row_hash: str
    shadow: ShadowOut | None = Field(
        default=None,
        description="The shadow model's view of this decision (GET by id only), if any.",
    )

    @classmethod
    def from_decision(cls, decision: Decision) -> DecisionOut:
        """The wire form of an audit row."""
        return cls(
            decision_id=decision.id,
            seq=decision.seq,
            created_at=decision.created_at,
            mode=decision.mode,
            siren=decision.siren,
            product=decision.product,
            requested_amount=str(decision.requested_amount),
            probability_of_default=decision.probability_of_default_float,
            score=decision.score,
            grade=decision.grade,
            decision=decision.decision,
            proposed_limit=str(decision.proposed_limit),
            reasons=decision.reasons,
            sources=decision.sources,
            degraded=decision.degraded,
            model=ModelRef(id=decision.model_id, version=decision.model_version),
            features=decision.features,
            latency_ms=decision.latency_ms,
            prev_hash=decision.prev_hash,
            row_hash=decision.row_hash,
        )


class DecisionPage(BaseModel):
    """A page of decisions, newest first; pass next_cursor as cursor for the next page."""

    items: list[DecisionOut]
    next_cursor: str | None


class DifferenceOut(BaseModel):
    """One output that replay computed differently from the record."""

    field: str
    recorded: Any
    replayed: Any


class ReplayOut(BaseModel):
    """Whether the stored model, fed the stored features, decides as recorded."""

    decision_id: str
    identical: bool
    differences: list[DifferenceOut]
    model: ModelRef
