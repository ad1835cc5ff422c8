"""What the console's pages do, on the service's own public functions.

Scoring goes through scoring.service.score_request, the very function behind
POST /v1/score (same validation, rate limit, idempotency and audit row); decisions are
read through DecisionRepository, checked with the chain's own hash code, and replayed with
the replay code of POST /v1/decisions/{id}/replay. Every read is scoped to the signed-in
tenant and mode: a decision of another tenant or mode is "not found".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.fr import siren as stdnum_siren

from b2bscore.consents import service as consents_service
from b2bscore.consents.models import Consent
from b2bscore.consents.repository import ConsentRepository
from b2bscore.decisions.chain import GENESIS_HASH, read_problem
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.models import Decision
from b2bscore.decisions.replay import ReplayResult, ReplayUnavailable, bundle_for, replay_decision
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.kit.db import SessionOpener
from b2bscore.kit.problems import Problem, validation_errors
from b2bscore.kit.state import AppState
from b2bscore.model import registry
from b2bscore.model import service as model_service
from b2bscore.model.drift import PSI_ACT, PSI_WATCH, DriftReport, Reference
from b2bscore.model.policy import merged_thresholds, score_points
from b2bscore.model.service import DRIFT_SAMPLE
from b2bscore.portfolio.models import MonitoredCompany
from b2bscore.portfolio.repository import PortfolioRepository
from b2bscore.scoring import service as scoring
from b2bscore.scoring.schemas import ScoreRequest, ScoreResponse
from b2bscore.tenants.limits import WINDOW_SECONDS, rate_key, refuse_past_limit
from b2bscore.tenants.service import Principal
from b2bscore.webhooks.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from b2bscore.webhooks.repository import WebhookRepository
from b2bscore.webhooks.schemas import EVENT_TYPES

from . import charts

PAGE_SIZE: Final = 25
# Operations charts read at most this many rows of a window (the newest ones).
OPERATIONS_MAX_ROWS: Final = 20_000
WINDOWS: Final[dict[str, timedelta]] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DECISIONS: Final = ("approve", "review", "decline")
GRADES: Final = ("A", "B", "C", "D", "E")
# Form field -> the API's field name, so that messages are the API's own.
SCORE_FIELDS: Final = {"siren": "siren", "amount": "requested_amount", "product": "product"}


# --- scoring -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoreOutcome:
    """Either a decision, or the field errors / problem that prevented one."""

    answer: ScoreResponse | None = None
    field_errors: dict[str, str] = field(default_factory=dict)
    problem: Problem | None = None


def validate_score_form(form: dict[str, str]) -> tuple[ScoreRequest | None, dict[str, str]]:
    """The API's ScoreRequest from the form, or the API's messages by form field."""
    body = {api: form.get(name, "") for name, api in SCORE_FIELDS.items()}
    try:
        return ScoreRequest.model_validate(body), {}
    except ValidationError as error:
        by_api_field = {v: k for k, v in SCORE_FIELDS.items()}
        messages: dict[str, str] = {}
        for item in validation_errors(error.errors()):
            name = by_api_field.get(str(item["field"]).split(".")[0], "siren")
            messages.setdefault(name, str(item["message"]))
        return None, messages


async def score(
    form: dict[str, str],
    *,
    principal: Principal,
    state: AppState,
    sessions: SessionOpener,
    idempotency_key: str | None,
    started: float,
) -> ScoreOutcome:
    """Validate like the API, count against the key's rate limit, then score like the API."""
    body, errors = validate_score_form(form)
    if body is None:
        return ScoreOutcome(field_errors=errors)
    if not principal.has_scope("score:write"):
        return ScoreOutcome(problem=Problem(403, "insufficient_scope", "Insufficient scope"))
    try:
        hits, seconds_left = await state.cache.incr_window(rate_key(principal), WINDOW_SECONDS)
        refuse_past_limit(principal, state.settings, hits, seconds_left)
        answer = await scoring.score_request(
            body,
            principal=principal,
            tools=scoring.ScoringTools.of(state, principal.mode, sessions=sessions),
            idempotency_key=idempotency_key,
            started=started,
        )
    except Problem as problem:
        return ScoreOutcome(problem=problem)
    return ScoreOutcome(answer=answer)


# --- decisions list ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionFilters:
    """The list's filters as typed (for the form) and as parsed (for the query)."""

    raw: dict[str, str]
    siren: str | None = None
    decision: str | None = None
    grade: str | None = None
    created_from: date | None = None
    created_to: date | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def query(self, **extra: str) -> dict[str, str]:
        """The filters as query parameters (empty ones dropped), plus extra."""
        kept = {k: v for k, v in self.raw.items() if v}
        return {**kept, **extra}


def parse_filters(params: dict[str, str]) -> DecisionFilters:
    """Typed filters; a bad value is reported by field and ignored."""
    raw = {k: params.get(k, "").strip()[:32] for k in ("siren", "decision", "grade", "from", "to")}
    errors: dict[str, str] = {}
    siren: str | None = None
    if raw["siren"]:
        try:
            siren = str(stdnum_siren.validate(raw["siren"]))
        except StdnumValidationError as error:
            errors["siren"] = f"not a valid SIREN ({error})"
    decision = raw["decision"] if raw["decision"] in DECISIONS else None
    grade = raw["grade"] if raw["grade"] in GRADES else None
    dates: dict[str, date | None] = {}
    for name in ("from", "to"):
        dates[name] = None
        if raw[name]:
            try:
                dates[name] = date.fromisoformat(raw[name])
            except ValueError:
                errors[name] = "bad_date"
    start, end = dates["from"], dates["to"]
    if start and end and start > end:
        errors["from"] = "from_after_to"
        start = end = None
    return DecisionFilters(raw, siren, decision, grade, start, end, errors)


@dataclass(frozen=True, slots=True)
class DecisionList:
    """One page of decisions, newest first, and the cursor of the next one."""

    rows: list[Decision]
    next_before: int | None


async def list_decisions(
    db: AsyncSession, principal: Principal, filters: DecisionFilters, before: int | None
) -> DecisionList:
    """A keyset page (by chain position) of the tenant's decisions in this mode."""
    created_from = (
        datetime.combine(filters.created_from, datetime.min.time(), UTC)
        if filters.created_from
        else None
    )
    created_to = (
        datetime.combine(filters.created_to + timedelta(days=1), datetime.min.time(), UTC)
        if filters.created_to
        else None
    )
    rows = await DecisionRepository(db).list(
        principal.tenant_id,
        siren=filters.siren,
        decision=filters.decision,
        grade=filters.grade,
        mode=principal.mode,
        created_from=created_from,
        created_to=created_to,
        limit=PAGE_SIZE + 1,  # one more tells whether an older page exists
        after=before,
    )
    page = list(rows[:PAGE_SIZE])
    return DecisionList(page, page[-1].seq if len(rows) > PAGE_SIZE else None)


# --- one decision ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """Whether the row hashes to its hash, and links to the row before it."""

    row_ok: bool
    link: str  # ok | broken | genesis | unknown


async def get_decision(db: AsyncSession, principal: Principal, decision_id: str) -> Decision | None:
    """The tenant's decision in the signed-in mode, or None."""
    if len(decision_id) > 64:
        return None
    decision = await DecisionRepository(db).get(principal.tenant_id, decision_id)
    if decision is None or decision.mode != principal.mode:
        return None
    return decision


async def check_chain_link(
    db: AsyncSession, decision: Decision, chain_keys: ChainKeyring
) -> ChainCheck:
    """Check the row with the audit's own read check and its link to the row before it."""
    repository = DecisionRepository(db)
    row_ok = await read_problem(repository, decision, chain_keys) is None
    if decision.seq == 1:
        return ChainCheck(row_ok, "genesis" if decision.prev_hash == GENESIS_HASH else "broken")
    previous = await repository.at_seq(decision.tenant_id, decision.mode, decision.seq - 1)
    if previous is None:
        return ChainCheck(row_ok, "broken")
    return ChainCheck(row_ok, "ok" if previous.row_hash == decision.prev_hash else "broken")


async def replay(state: AppState, decision: Decision) -> ReplayResult:
    """The replay of POST /v1/decisions/{id}/replay; ReplayUnavailable when impossible."""
    bundle = await bundle_for(decision, state.bundles, state.settings.models_dir)
    return replay_decision(decision, bundle)


__all__ = ["ReplayUnavailable"]


# --- operations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operations:
    """Latency percentiles, outcomes and scores of one window."""

    window: str
    total: int
    sampled: bool
    degraded: int
    p50: float
    p95: float
    p99: float
    outcomes: dict[str, int]
    scores: list[int]
    approve_from: int
    decline_below: int


async def operations(
    db: AsyncSession, principal: Principal, state: AppState, window: str
) -> Operations:
    """The window's figures from the audit store, for this tenant and mode."""
    since = datetime.now(UTC) - WINDOWS[window]
    rows = await DecisionRepository(db).outcomes_since(
        principal.tenant_id, principal.mode, since, limit=OPERATIONS_MAX_ROWS
    )
    latencies = sorted(r[0] for r in rows)
    outcomes = Counter(r[1] for r in rows)
    thresholds = merged_thresholds(state.bundle.policy)
    return Operations(
        window=window,
        total=len(rows),
        sampled=len(rows) >= OPERATIONS_MAX_ROWS,
        degraded=sum(1 for r in rows if r[3]),
        p50=charts.percentile(latencies, 0.50),
        p95=charts.percentile(latencies, 0.95),
        p99=charts.percentile(latencies, 0.99),
        outcomes={d: outcomes.get(d, 0) for d in DECISIONS},
        scores=[r[2] for r in rows],
        approve_from=score_points(float(thresholds["approve_max_pd"]), thresholds),
        decline_below=score_points(float(thresholds["decline_min_pd"]), thresholds),
    )


def sources_view(sources: dict[str, Any], today: date) -> list[dict[str, Any]]:
    """The recorded sources in a fixed order, with their as_of parsed."""
    order = ["open_banking", "accounting", "registry"]
    names = order + sorted(k for k in sources if k not in order)
    view = []
    for name in names:
        source = sources.get(name)
        if not isinstance(source, dict):
            continue
        as_of_raw = source.get("as_of")
        try:
            as_of = date.fromisoformat(as_of_raw) if isinstance(as_of_raw, str) else None
        except ValueError:
            as_of = None
        view.append(
            {
                "name": name,
                "status": str(source.get("status", "")),
                "latency_ms": source.get("latency_ms"),
                "as_of": as_of,
                "detail": source.get("detail"),
                "usable": source.get("status") in {"ok", "cached"},
            }
        )
    return view


# --- models ------------------------------------------------------------------------------

MODEL_WINDOWS: Final = ("24h", "7d", "30d")


@dataclass(frozen=True, slots=True)
class ModelsView:
    """The registry's bundles with their roles, and the serving bundle's drift figures."""

    bundles: list[dict[str, Any]]
    serving_model: str
    drift: DriftReport | None
    drift_unavailable: str | None
    watch: float
    act: float


async def models(db: AsyncSession, state: AppState, window: str) -> ModelsView:
    """What `b2bscore models list` and `b2bscore models drift` print, for the console."""
    assigned = await registry.assignments(db)
    roles: dict[str, list[str]] = {}
    for role, row in assigned.items():
        roles.setdefault(row.model_id, []).append(role)
    if "live" not in assigned:
        # No promotion recorded yet: the service serves its start-up bundle.
        roles.setdefault(state.bundle.model_id, []).append("live")
    bundles = [
        info.to_json(roles.get(info.model_id, []))
        for info in registry.catalogue(state.settings.models_dir)
    ]
    report: DriftReport | None = None
    unavailable: str | None = None
    try:
        report = await model_service.drift(db, state.bundle, window)
    except ValueError as error:  # a bundle without a drift reference
        unavailable = str(error)
    return ModelsView(
        bundles=bundles,
        serving_model=state.bundle.model_id,
        drift=report,
        drift_unavailable=unavailable,
        watch=PSI_WATCH,
        act=PSI_ACT,
    )


# --- webhooks ----------------------------------------------------------------------------

DELIVERIES_SHOWN: Final = 20


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One delivery of an endpoint with its last attempt (None before the first)."""

    delivery: WebhookDelivery
    event_type: str
    last_attempt: WebhookAttempt | None


async def webhook_endpoints(db: AsyncSession, principal: Principal) -> list[WebhookEndpoint]:
    """The tenant's endpoints in this mode, oldest first."""
    return list(await WebhookRepository(db).endpoints(principal.tenant_id, principal.mode))


async def webhook_endpoint(
    db: AsyncSession, principal: Principal, endpoint_id: str
) -> WebhookEndpoint | None:
    """One endpoint of the tenant in this mode, else None (another tenant's too)."""
    return await WebhookRepository(db).endpoint(principal.tenant_id, principal.mode, endpoint_id)


async def webhook_deliveries(db: AsyncSession, endpoint: WebhookEndpoint) -> list[DeliveryRow]:
    """The endpoint's newest deliveries, each with its latest attempt."""
    repository = WebhookRepository(db)
    rows = await repository.deliveries(endpoint.id, DELIVERIES_SHOWN, None)
    last: dict[str, WebhookAttempt] = {}
    for attempt in await repository.attempts([d.id for d, _ in rows]):
        last[attempt.delivery_id] = attempt  # oldest first: the last one wins
    return [DeliveryRow(d, event_type, last.get(d.id)) for d, event_type in rows]


# --- consents ----------------------------------------------------------------------------

CONSENTS_SHOWN: Final = 100


async def consents(db: AsyncSession, principal: Principal) -> list[Consent]:
    """The tenant's newest consents in this mode."""
    repository = ConsentRepository(db)
    return list(await repository.page(principal.tenant_id, principal.mode, CONSENTS_SHOWN, None))


async def revoke_consent(
    db: AsyncSession, state: AppState, principal: Principal, consent_id: str
) -> bool:
    """Revoke as DELETE /v1/consents/{id} does (at the bank too); False if not the tenant's."""
    consent = await ConsentRepository(db).get(principal.tenant_id, principal.mode, consent_id)
    if consent is None:
        return False
    # The banks' OAuth endpoints: never redirected, no proxy from the environment.
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http:
        await consents_service.revoke_consent(
            db,
            state.settings,
            state.keyring,
            http,
            consent,
            actor=principal.key_id,
            now=datetime.now(UTC),
        )
    return True


# --- monitoring --------------------------------------------------------------------------

MONITORED_SHOWN: Final = 100
# Alerts are the monitoring events of the portfolio (their ordering key is the SIREN).
COMPANY_EVENTS: Final = tuple(t for t in EVENT_TYPES if t.startswith("company."))
ALERTS_LISTED: Final = 3  # per company on the list
ALERTS_SHOWN: Final = 50  # on one company's page


@dataclass(frozen=True, slots=True)
class Monitored:
    """A watched company and its newest alerts, all of the signed-in tenant and mode."""

    company: MonitoredCompany
    alerts: list[Event]


async def _alerts(
    db: AsyncSession, principal: Principal, sirens: list[str], per_company: int
) -> dict[str, list[Event]]:
    rows = await WebhookRepository(db).events(
        principal.tenant_id, principal.mode, sirens, types=COMPANY_EVENTS, per_key=per_company
    )
    by_siren: dict[str, list[Event]] = {}
    for event in rows:  # newest first, kept in that order
        by_siren.setdefault(event.ordering_key, []).append(event)
    return by_siren


async def monitored(db: AsyncSession, principal: Principal) -> list[Monitored]:
    """The tenant's newest watched companies in this mode, each with its newest alerts."""
    companies = await PortfolioRepository(db).monitored_page(
        principal.tenant_id, principal.mode, MONITORED_SHOWN, None
    )
    alerts = await _alerts(db, principal, [c.siren for c in companies], ALERTS_LISTED)
    return [Monitored(c, alerts.get(c.siren, [])) for c in companies]


async def monitored_company(
    db: AsyncSession, principal: Principal, item_id: str
) -> Monitored | None:
    """One watched company of the tenant in this mode and its alerts; None otherwise."""
    if len(item_id) > 64:
        return None
    company = await PortfolioRepository(db).monitored(principal.tenant_id, principal.mode, item_id)
    if company is None:
        return None
    alerts = await _alerts(db, principal, [company.siren], ALERTS_SHOWN)
    return Monitored(company, alerts.get(company.siren, []))


# --- the model, as one tenant sees it ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoreBin:
    """One bin of the training reference's scores: its range and both shares."""

    low: int
    high: int
    reference: float
    yours: float


@dataclass(frozen=True, slots=True)
class TenantModelView:
    """The models behind one tenant's decisions in one mode, and how its scores compare."""

    window: str
    live: tuple[str, str]
    shadow: tuple[str, str] | None
    canary: tuple[str, str] | None
    canary_percent: int
    canary_all_yours: bool
    used: list[tuple[str, str, int]]
    drift: DriftReport | None
    drift_unavailable: str | None
    bins: list[ScoreBin]
    shadow_comparison: dict[str, Any] | None
    watch: float = PSI_WATCH
    act: float = PSI_ACT


def _score_bins(reference: Reference, shares: tuple[float, ...]) -> list[ScoreBin]:
    # Scores are whole points and the edges observed scores: bin (e_i, e_i+1] is e_i+1..e_i+1.
    edges = [int(e) for e in reference.score.edges]
    lows = [0, *(e + 1 for e in edges)]
    highs = [*edges, 1000]
    yours = shares[1:] if shares else (0.0,) * len(lows)
    return [
        ScoreBin(low, high, expected, actual)
        for low, high, expected, actual in zip(
            lows, highs, reference.score.expected[1:], yours, strict=True
        )
    ]


async def tenant_model(
    db: AsyncSession, state: AppState, principal: Principal, window: str
) -> TenantModelView:
    """The live, shadow and canary models, and the tenant's own drift, in its key's mode."""
    serving = state.serving
    live = serving.live if serving is not None else state.bundle
    since = datetime.now(UTC) - model_service.parse_window(window)
    report: DriftReport | None = None
    unavailable: str | None = None
    try:
        report = await model_service.drift(
            db,
            live,
            window,
            tenant_id=principal.tenant_id,
            mode=principal.mode,
            with_features=False,  # the page shows the score's drift alone
        )
    except ValueError as error:  # a bundle without a drift reference
        unavailable = str(error)
    shadow = serving.shadow if serving is not None else None
    canary = serving.canary if serving is not None else None
    comparison = None
    if shadow is not None:
        comparison = await model_service.compare(
            db, since, tenant_id=principal.tenant_id, mode=principal.mode, limit=DRIFT_SAMPLE
        )
    return TenantModelView(
        window=window,
        live=(live.model_id, live.version),
        shadow=(shadow.model_id, shadow.version) if shadow is not None else None,
        canary=(canary.model_id, canary.version) if canary is not None else None,
        canary_percent=serving.canary_percent if serving is not None else 0,
        canary_all_yours=serving is not None and principal.tenant_id in serving.canary_tenants,
        used=await model_service.models_used(
            db, since, tenant_id=principal.tenant_id, mode=principal.mode
        ),
        drift=report,
        drift_unavailable=unavailable,
        bins=_score_bins(live.reference, report.score_shares)
        if report is not None and live.reference is not None
        else [],
        shadow_comparison=comparison,
    )
