"""Wire schemas of POST /v1/score."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.fr import siren as stdnum_siren

from b2bscore.features.types import Product

MAX_REQUESTED_AMOUNT = Decimal("10000000")
MAX_SIREN_LENGTH = 20
_AMOUNT_PATTERN = re.compile(r"^\d{1,12}(\.\d{1,2})?$")

DecimalString = Annotated[Decimal, PlainSerializer(lambda v: f"{v:.2f}", return_type=str)]


class ScoreRequest(BaseModel):
    """A lender's request for an instant decision."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"siren": "111 111 118", "requested_amount": "25000.00", "product": "term_loan"}
            ]
        },
    )

    siren: str = Field(
        min_length=9,
        max_length=MAX_SIREN_LENGTH,
        description="French company number; spaces tolerated.",
    )
    requested_amount: DecimalString = Field(
        description="Amount asked for, EUR, as a decimal string with at most 2 decimals.",
        json_schema_extra={"type": "string", "pattern": _AMOUNT_PATTERN.pattern},
    )
    product: Product
    currency: Literal["EUR"] = "EUR"
    # Printable text only: it is stored in the audit row, and PostgreSQL's JSONB refuses
    # a NUL character (which would cost the decision its audit row).
    external_reference: str | None = Field(
        default=None, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$"
    )

    @field_validator("siren", mode="before")
    @classmethod
    def _valid_siren(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string of 9 digits")
        # Checked before stdnum compacts the spaces away: padding is not a SIREN either.
        if len(value) > MAX_SIREN_LENGTH:
            raise ValueError(f"must be at most {MAX_SIREN_LENGTH} characters")
        try:
            return str(stdnum_siren.validate(value))
        except StdnumValidationError as error:
            raise ValueError(f"not a valid SIREN ({error})") from None

    @field_validator("requested_amount", mode="before")
    @classmethod
    def _valid_amount(cls, value: Any) -> Decimal:
        # Floats are refused: a binary float cannot carry an exact amount of money.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError('must be a decimal string such as "25000.00"')
        text = str(value).strip()
        if not _AMOUNT_PATTERN.fullmatch(text):
            raise ValueError("must be a positive decimal string with at most 2 decimals")
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise ValueError("must be a decimal string") from None
        if amount <= 0:
            raise ValueError("must be greater than 0")
        if amount > MAX_REQUESTED_AMOUNT:
            raise ValueError(f"must not exceed {MAX_REQUESTED_AMOUNT} EUR")
        return amount


class ReasonOut(BaseModel):
    """One reason behind the decision, readable by a credit officer and the customer."""

    code: str
    family: str
    direction: Literal["adverse", "favourable"]
    contribution: float = Field(description="SHAP contribution to the log-odds of default.")
    feature: str | None
    value: float | None
    label_fr: str
    label_en: str


class SnapshotOut(BaseModel):
    """The lender's consent that served the bank data of this decision, and how."""

    consent_id: str
    age_seconds: float  # 0 when the bank was asked in this decision
    scopes: list[str]  # the categories that fed the decision
    source: Literal["snapshot", "bank"] = Field(
        default="snapshot",
        description="snapshot: the consent's synced snapshot; bank: asked in this decision "
        "with the consent's token (no fresh snapshot yet).",
    )
    stale: bool = Field(
        default=False,
        description="The snapshot is older than the freshness limit: the bank could not "
        "be asked in time (the answer is degraded).",
    )


class SourceOut(BaseModel):
    """What one provider gave for this decision."""

    status: Literal["ok", "cached", "timeout", "error", "unavailable"]
    latency_ms: float
    as_of: date | None
    detail: str | None = None
    snapshot: SnapshotOut | None = None


class ModelOut(BaseModel):
    """The model that produced the decision."""

    id: str
    version: str


class ScoreResponse(BaseModel):
    """An instant, explained, audited credit decision."""

    decision_id: str
    mode: Literal["test", "live"] = Field(
        description="test: the sandbox world (sk_test_ keys); live: real providers."
    )
    created_at: datetime
    siren: str
    product: Product
    requested_amount: DecimalString
    currency: Literal["EUR"] = "EUR"
    probability_of_default: float = Field(description="Calibrated 12-month PD.")
    score: int = Field(ge=0, le=1000, description="0-1000, higher is safer.")
    grade: str
    decision: Literal["approve", "review", "decline"]
    proposed_limit: DecimalString
    reasons: list[ReasonOut]
    sources: dict[str, SourceOut]
    model: ModelOut
    degraded: bool
    latency_ms: float
