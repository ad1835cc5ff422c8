"""Wire schemas of the webhook endpoints API and of every event a webhook carries.

Each event type has one data model here; a delivery's body is
`{"type": <type>, "timestamp": <ISO 8601 UTC>, "data": <that model>}`. The models are
listed in the OpenAPI document's `webhooks` section. A field is only ever added to a data
model, never renamed or removed (receivers must ignore fields they do not know).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Final, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

# --- event data ------------------------------------------------------------------------


class ScoreSnapshot(BaseModel):
    """A company's score at one check."""

    decision_id: str | None
    score: int
    grade: str
    probability_of_default: float
    decision: str | None = None


class ReasonMove(BaseModel):
    """A reason whose contribution moved between two checks (SHAP, log-odds of default)."""

    code: str
    label_en: str
    label_fr: str
    previous_contribution: float | None
    current_contribution: float | None


class CompanyScoreChanged(BaseModel):
    """A watched company's score crossed a rule of the tenant (grade drop, score band)."""

    monitored_company_id: str
    siren: str
    external_reference: str | None
    previous: ScoreSnapshot
    current: ScoreSnapshot
    triggers: list[Literal["grade_drop", "band_crossing", "grade_rise"]]
    reasons_moved: list[ReasonMove]


class CompanyProceedingsOpened(BaseModel):
    """A collective-proceedings judgment was published (BODACC) for a watched company."""

    monitored_company_id: str
    siren: str
    external_reference: str | None
    announcement_id: str
    published_on: date
    nature: str | None


class CompanyClosed(BaseModel):
    """The registry (Sirene) shows a watched company as closed (ceased)."""

    monitored_company_id: str
    siren: str
    external_reference: str | None
    detected_at: datetime


class ConsentChanged(BaseModel):
    """A company's open-banking consent expires soon, expired, or was revoked."""

    consent_id: str
    siren: str
    bank: str
    status: str
    scopes: list[str]
    expires_at: datetime | None


class BatchCompleted(BaseModel):
    """Every row of a batch has its decision or its error."""

    batch_id: str
    status: Literal["completed"]
    total_rows: int
    decided_rows: int
    invalid_rows: int
    failed_rows: int


class WebhookEndpointDisabled(BaseModel):
    """An endpoint kept failing past the retry schedule and was disabled."""

    endpoint_id: str
    url: str
    reason: str
    disabled_at: datetime


# Every event type and its data model. A domain that emits a new type adds it here.
EVENT_TYPES: Final[dict[str, type[BaseModel]]] = {
    "company.score_changed": CompanyScoreChanged,
    "company.proceedings_opened": CompanyProceedingsOpened,
    "company.closed": CompanyClosed,
    "batch.completed": BatchCompleted,
    "webhook_endpoint.disabled": WebhookEndpointDisabled,
    "consent.expiring": ConsentChanged,
    "consent.expired": ConsentChanged,
    "consent.revoked": ConsentChanged,
}
ALL_EVENTS: Final = "*"

EventType = Literal[
    "company.score_changed",
    "company.proceedings_opened",
    "company.closed",
    "batch.completed",
    "webhook_endpoint.disabled",
    "consent.expiring",
    "consent.expired",
    "consent.revoked",
    "*",
]


def envelope(event_type: str, timestamp: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The body of a delivery."""
    return {"type": event_type, "timestamp": timestamp.isoformat(), "data": data}


def document_webhooks(app: FastAPI) -> None:
    """List every event type, with its body schema, in the OpenAPI `webhooks` section."""
    for event_type, data_model in EVENT_TYPES.items():

        async def receive(body: BaseModel) -> None:
            """Documentation only: what a receiver gets."""

        # The real body type, as an object: this module's annotations are strings.
        receive.__annotations__ = {"body": _envelope_model(event_type, data_model), "return": None}

        app.webhooks.post(
            event_type,
            summary=event_type,
            description=(
                f"{data_model.__doc__ or ''}\n\nSigned per Standard Webhooks: headers "
                "`webhook-id`, `webhook-timestamp`, `webhook-signature`."
            ),
            status_code=204,
        )(receive)


def _envelope_model(event_type: str, data_model: type[BaseModel]) -> type[BaseModel]:
    from pydantic import create_model

    name = "".join(part.title() for part in event_type.replace(".", "_").split("_")) + "Event"
    model: type[BaseModel] = create_model(
        name,
        type=(Literal[event_type], ...),  # type: ignore[arg-type]
        timestamp=(datetime, ...),
        data=(data_model, ...),
    )
    return model


# --- API -------------------------------------------------------------------------------


class EndpointCreate(BaseModel):
    """A URL that receives the events it subscribes to."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://lender.example/webhooks/b2bscore",
                    "event_types": ["company.score_changed", "company.proceedings_opened"],
                }
            ]
        },
    )

    url: str = Field(min_length=1, max_length=2048)
    event_types: list[EventType] = Field(min_length=1, max_length=32)
    description: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


class EndpointOut(BaseModel):
    """A webhook endpoint (its secret is shown only at creation and rotation)."""

    id: str
    mode: Literal["test", "live"]
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime


class EndpointCreated(EndpointOut):
    """A new endpoint and its signing secret, shown this once."""

    secret: str = Field(description="Standard Webhooks signing secret (whsec_...).")


class EndpointList(BaseModel):
    """The tenant's endpoints in the caller's mode."""

    data: list[EndpointOut]


class RotateSecret(BaseModel):
    """How long the old secret keeps signing beside the new one."""

    model_config = ConfigDict(extra="forbid")

    grace_period_seconds: int | None = Field(default=None, ge=0, le=7 * 86_400)


class SecretRotated(BaseModel):
    """The new signing secret; the previous one signs too until previous_secret_expires_at."""

    id: str
    secret: str
    previous_secret_expires_at: datetime | None


class AttemptOut(BaseModel):
    """One HTTP attempt of a delivery."""

    attempt: int
    attempted_at: datetime
    outcome: Literal["succeeded", "retry", "failed"]
    status_code: int | None
    error: str | None
    latency_ms: float
    response_excerpt: str | None


class DeliveryOut(BaseModel):
    """One event owed to the endpoint, and every attempt made."""

    id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    completed_at: datetime | None
    attempt_log: list[AttemptOut]


class DeliveryList(BaseModel):
    """Deliveries of one endpoint, newest first."""

    data: list[DeliveryOut]
