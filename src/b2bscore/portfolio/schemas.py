"""Wire schemas of monitoring (/v1/monitored-companies, /v1/monitoring-rules) and batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from b2bscore.features.types import Product
from b2bscore.scoring.schemas import DecimalString, ScoreRequest
from b2bscore.webhooks.schemas import ScoreSnapshot

DEFAULT_SCORE_BANDS = (300, 500, 700)


class Rules(BaseModel):
    """When a re-check emits `company.score_changed` (both rules apply; either triggers).

    - grade_drop: the grade fell by at least this many steps (A > B > C > D > E).
    - score_bands: band edges on the 0-1000 score; moving from one band to another, up
      or down, is a crossing. An empty list turns the rule off.
    """

    model_config = ConfigDict(extra="forbid")

    grade_drop: int = Field(default=1, ge=1, le=4)
    score_bands: list[int] = Field(default=list(DEFAULT_SCORE_BANDS), max_length=20)

    @field_validator("score_bands")
    @classmethod
    def _sorted_edges(cls, value: list[int]) -> list[int]:
        if any(not 0 < edge < 1000 for edge in value):
            raise ValueError("band edges lie strictly between 0 and 1000")
        return sorted(set(value))


class MonitoredCompanyCreate(BaseModel):
    """Put a company under watch."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"siren": "111 111 118", "rules": {"grade_drop": 1}}]},
    )

    siren: str = Field(min_length=9, max_length=20)
    decision_id: str | None = Field(
        default=None,
        max_length=36,
        description="The decision this watch follows: its product, amount and score "
        "are the starting point.",
    )
    product: Product | None = None
    requested_amount: str | None = Field(default=None, description="Decimal string, EUR.")
    rules: Rules | None = Field(default=None, description="Default: the tenant's rules.")
    external_reference: str | None = Field(
        default=None, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$"
    )

    @field_validator("siren", mode="before")
    @classmethod
    def _valid_siren(cls, value: Any) -> str:
        result: str = ScoreRequest._valid_siren(value)
        return result

    @field_validator("requested_amount", mode="before")
    @classmethod
    def _valid_amount(cls, value: Any) -> str | None:
        if value is None:
            return None
        amount = ScoreRequest._valid_amount(value)
        return f"{amount:.2f}"


class MonitoredCompanyOut(BaseModel):
    """A watched company and what its last check saw."""

    id: str
    mode: Literal["test", "live"]
    siren: str
    follows_decision_id: str | None
    product: Product
    requested_amount: DecimalString
    rules: Rules
    rules_source: Literal["company", "tenant", "default"]
    external_reference: str | None
    created_at: datetime
    last_checked_at: datetime | None
    last: ScoreSnapshot | None
    active: bool | None


class MonitoredCompanyList(BaseModel):
    """Watched companies, newest first."""

    data: list[MonitoredCompanyOut]
    next_cursor: str | None


class RulesOut(BaseModel):
    """The tenant's monitoring rules in the caller's mode."""

    rules: Rules
    source: Literal["tenant", "default"]
    updated_at: datetime | None


class BatchCounts(BaseModel):
    """Rows of a batch by outcome so far."""

    total: int
    pending: int
    decided: int
    invalid: int
    failed: int


class BatchOut(BaseModel):
    """A batch and its progress."""

    id: str
    mode: Literal["test", "live"]
    status: Literal["queued", "running", "completed"]
    format: Literal["csv", "jsonl"]
    counts: BatchCounts
    progress: float = Field(description="Share of rows done, 0 to 1.")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    results_url: str
