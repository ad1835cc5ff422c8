"""Portfolio monitoring: watch a company, re-check it, tell the tenant what moved.

A check gathers the company's sources fresh (no cache), runs the same decision core as
POST /v1/score and records a full audited decision under the key that asked for the watch.
Then, in one transaction, it compares with what the previous check saw, emits the events
the tenant's rules call for and keeps the new state. The first check only sets the
baseline (unless the watch follows a decision, whose score is then the baseline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from b2bscore.decisions.repository import DecisionRepository
from b2bscore.features.types import Product
from b2bscore.kit.db import opened_session
from b2bscore.kit.problems import Problem
from b2bscore.kit.state import AppState
from b2bscore.model.policy import GRADES
from b2bscore.portfolio import changes
from b2bscore.portfolio.models import MonitoredCompany
from b2bscore.portfolio.repository import PortfolioRepository
from b2bscore.portfolio.schemas import MonitoredCompanyCreate, Rules
from b2bscore.scoring.schemas import ScoreRequest, ScoreResponse
from b2bscore.scoring.service import (
    ScoringTools,
    decide_on_sources,
    lender_data,
    request_fingerprint,
)
from b2bscore.sources.fanout import gather_sources
from b2bscore.sources.types import RegistryData
from b2bscore.tenants.models import new_id, utcnow
from b2bscore.tenants.service import Principal
from b2bscore.webhooks import service as webhooks

log = logging.getLogger(__name__)

CHECK_TASK = changes.CHECK_TASK
DEFAULT_PRODUCT = Product.TERM_LOAN
DEFAULT_AMOUNT = Decimal("10000.00")
# A reason that moved by less than this (log-odds) is not worth telling.
REASON_MOVE_THRESHOLD = 0.05
MAX_REASONS_MOVED = 6


def effective_rules(
    company: MonitoredCompany, tenant_rules: dict[str, Any] | None
) -> tuple[Rules, str]:
    """The rules that apply to a watched company, and where they come from."""
    if company.rules:
        return Rules.model_validate(company.rules), "company"
    if tenant_rules is not None:
        return Rules.model_validate(tenant_rules), "tenant"
    return Rules(), "default"


async def watch(
    state: AppState, principal: Principal, body: MonitoredCompanyCreate
) -> MonitoredCompany:
    """Put a company under watch (409 if it already is); its first check is queued."""
    settings = state.settings
    async with opened_session(state.sessionmaker) as session:
        repository = PortfolioRepository(session)
        if await repository.count_monitored(principal.tenant_id, principal.mode) >= (
            settings.monitor_max_companies
        ):
            raise Problem(
                409,
                "portfolio_full",
                "Too many watched companies",
                f"A tenant may watch at most {settings.monitor_max_companies} companies per mode.",
            )
        product = body.product or DEFAULT_PRODUCT
        amount = Decimal(body.requested_amount) if body.requested_amount else DEFAULT_AMOUNT
        row = MonitoredCompany(
            id=new_id(),
            tenant_id=principal.tenant_id,
            mode=principal.mode,
            api_key_id=principal.key_id,
            siren=body.siren,
            rules=body.rules.model_dump() if body.rules is not None else {},
            external_reference=body.external_reference,
            created_at=utcnow(),
        )
        if body.decision_id is not None:
            decision = await DecisionRepository(session).get(principal.tenant_id, body.decision_id)
            if decision is None or decision.mode != principal.mode:
                raise Problem(
                    422,
                    "validation_error",
                    "Unknown decision",
                    "decision_id names no decision of this tenant and mode.",
                    errors=[{"field": "decision_id", "message": "unknown decision"}],
                )
            if decision.siren != body.siren:
                raise Problem(
                    422,
                    "validation_error",
                    "Decision of another company",
                    "decision_id was made on another SIREN.",
                    errors=[{"field": "decision_id", "message": "decision on another siren"}],
                )
            row.follows_decision_id = decision.id
            product = Product(decision.product)
            amount = (
                body.requested_amount and Decimal(body.requested_amount)
            ) or decision.requested_amount
            row.last_decision_id = decision.id
            row.last_score = decision.score
            row.last_grade = decision.grade
            row.last_probability_of_default = str(decision.probability_of_default)
            row.last_reasons = list(decision.reasons)
        row.product = product.value
        row.requested_amount = amount
        session.add(row)
        from sqlalchemy.exc import IntegrityError

        try:
            await session.commit()
        except IntegrityError:
            raise Problem(
                409,
                "already_monitored",
                "Company already watched",
                "This SIREN is already watched in this mode; delete it first to change it.",
            ) from None
    if state.jobs is not None:
        lock = changes.check_lock(row.id)
        await state.jobs.defer(CHECK_TASK, queueing_lock=lock, monitored_id=row.id)
    return row


@dataclass(slots=True)
class CheckOutcome:
    """What one check did."""

    monitored_id: str
    decision_id: str | None
    events: list[str]


def _principal(row: MonitoredCompany) -> Principal:
    return Principal(
        tenant_id=row.tenant_id,
        tenant_name="",
        key_id=row.api_key_id,
        mode="test" if row.mode == "test" else "live",
        scopes=frozenset({"score:write"}),
        rate_limit_per_minute=None,
    )


def _tools(state: AppState, mode: str) -> ScoringTools:
    return ScoringTools.of(state, mode)


async def check(state: AppState, monitored_id: str) -> CheckOutcome:
    """Re-score one watched company and emit what its rules call for."""
    settings = state.settings
    async with opened_session(state.sessionmaker) as session:
        row = await session.get(MonitoredCompany, monitored_id)
        if row is None:
            return CheckOutcome(monitored_id, None, [])
        session.expunge(row)
    principal = _principal(row)
    tools = _tools(state, row.mode)
    body = ScoreRequest(
        siren=row.siren, requested_amount=f"{row.requested_amount:.2f}", product=row.product
    )
    started = time.monotonic()
    # What the check saw is the data as of now: a change stored later is newer than this
    # (portfolio.changes compares the two).
    seen_at = utcnow()
    deadline = started + settings.monitor_check_deadline_ms / 1000
    sources_deadline = deadline - settings.scoring_reserve_ms / 1000
    books, books_namespace, snapshot = lender_data(tools, principal, sources_deadline)
    # Fresh data, never the cache: a check is there to see what changed.
    sources = await gather_sources(
        row.siren,
        tools.clients,
        deadline=sources_deadline,
        cache=None,
        tokenizer=state.tokenizer,
        as_of=datetime.now(UTC).date(),
        cache_namespace="monitoring",
        uploaded_books=books,
        accounting_namespace=books_namespace,
        bank_snapshot=snapshot,
    )
    answer = await decide_on_sources(
        body,
        sources,
        principal=principal,
        tools=tools,
        idempotency_key=None,
        fingerprint=request_fingerprint(body),
        started=started,
        deadline=deadline,
    )
    record = sources.record
    async with opened_session(state.sessionmaker) as session:
        fresh = await session.get(MonitoredCompany, monitored_id, with_for_update=True)
        if fresh is None:  # deleted while it was being checked
            return CheckOutcome(monitored_id, answer.decision_id, [])
        if fresh.last_checked_at is not None and fresh.last_checked_at > seen_at:
            # Two checks of a company may run at once (no job lock: changes.py); the one
            # that read later data committed first, and older data must not undo it.
            return CheckOutcome(monitored_id, answer.decision_id, [])
        tenant = await PortfolioRepository(session).rules(fresh.tenant_id, fresh.mode)
        rules, _ = effective_rules(fresh, tenant.rules if tenant else None)
        emitted = await _compare_and_emit(session, fresh, answer, record, rules, seen_at)
        await session.commit()
    await webhooks.dispatch(state.jobs, emitted)
    return CheckOutcome(monitored_id, answer.decision_id, [e.type for e in emitted.events])


def _snapshot(
    decision_id: str | None, score: int, grade: str, pd: float, decision: str | None
) -> dict[str, Any]:
    return {
        "decision_id": decision_id,
        "score": score,
        "grade": grade,
        "probability_of_default": pd,
        "decision": decision,
    }


def _band(score: int, edges: list[int]) -> int:
    return sum(1 for edge in edges if score >= edge)


def reasons_moved(
    previous: list[dict[str, Any]], current: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Reasons whose contribution moved most between two checks (appeared, gone, changed)."""
    before = {r["code"]: r for r in previous}
    after = {r["code"]: r for r in current}
    moves = []
    for code in before.keys() | after.keys():
        old, new = before.get(code), after.get(code)
        old_c = float(old["contribution"]) if old else None
        new_c = float(new["contribution"]) if new else None
        delta = abs((new_c or 0.0) - (old_c or 0.0))
        if delta < REASON_MOVE_THRESHOLD and old is not None and new is not None:
            continue
        label = new or old
        assert label is not None
        moves.append(
            (
                delta,
                {
                    "code": code,
                    "label_en": label.get("label_en", code),
                    "label_fr": label.get("label_fr", code),
                    "previous_contribution": old_c,
                    "current_contribution": new_c,
                },
            )
        )
    moves.sort(key=lambda m: (-m[0], m[1]["code"]))
    return [m for _, m in moves[:MAX_REASONS_MOVED]]


async def _compare_and_emit(
    session: Any,
    row: MonitoredCompany,
    answer: ScoreResponse,
    record: RegistryData | None,
    rules: Rules,
    seen_at: datetime,
) -> webhooks.Emitted:
    emitted = webhooks.Emitted()
    baseline = row.last_score is None
    common = {
        "monitored_company_id": row.id,
        "siren": row.siren,
        "external_reference": row.external_reference,
    }

    async def emit(event_type: str, data: dict[str, Any]) -> None:
        emitted.merge(
            await webhooks.emit_event(
                session,
                tenant_id=row.tenant_id,
                mode=row.mode,
                event_type=event_type,
                ordering_key=row.siren,
                data={**common, **data},
            )
        )

    reasons_now = [r.model_dump(mode="json") for r in answer.reasons]
    if not baseline:
        assert row.last_score is not None
        assert row.last_grade is not None
        triggers = []
        drop = GRADES.index(answer.grade) - GRADES.index(row.last_grade)
        if drop >= rules.grade_drop:
            triggers.append("grade_drop")
        if _band(answer.score, rules.score_bands) != _band(row.last_score, rules.score_bands):
            triggers.append("band_crossing")
        if triggers:
            await emit(
                "company.score_changed",
                {
                    "previous": _snapshot(
                        row.last_decision_id,
                        row.last_score,
                        row.last_grade,
                        float(row.last_probability_of_default or 0),
                        None,
                    ),
                    "current": _snapshot(
                        answer.decision_id,
                        answer.score,
                        answer.grade,
                        answer.probability_of_default,
                        answer.decision,
                    ),
                    "triggers": triggers,
                    "reasons_moved": reasons_moved(row.last_reasons or [], reasons_now),
                },
            )
    known = set(row.known_proceedings or [])
    if record is not None:
        proceedings = [a for a in record.announcements if a.family.lower() == "collective"]
        for announcement in proceedings:
            key = changes.announcement_key(announcement.published_on, announcement.nature)
            if key in known:
                continue
            known.add(key)
            if row.known_proceedings is not None:  # the first check only learns them
                await emit(
                    "company.proceedings_opened",
                    {
                        "announcement_id": key,
                        "published_on": announcement.published_on,
                        "nature": announcement.nature,
                    },
                )
        if row.last_active and not record.active:
            await emit("company.closed", {"detected_at": utcnow()})
        row.last_active = record.active
    row.known_proceedings = sorted(known)
    row.last_checked_at = seen_at
    row.last_decision_id = answer.decision_id
    row.last_score = answer.score
    row.last_grade = answer.grade
    row.last_probability_of_default = f"{answer.probability_of_default:.8f}"
    row.last_reasons = reasons_now
    return emitted


async def sweep(
    state: AppState,
    *,
    siren: str | None = None,
    concurrency: int = 8,
    progress: Any = None,
) -> list[CheckOutcome]:
    """Check every watched company now (or those of one SIREN), concurrency at a time."""
    outcomes: list[CheckOutcome] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(monitored_id: str) -> None:
        async with gate:
            try:
                outcomes.append(await check(state, monitored_id))
            except Exception:  # one company must not stop the sweep
                log.exception("monitoring check of %s failed", monitored_id)
            if progress is not None:
                progress(1)

    after: str | None = None
    while True:
        async with opened_session(state.sessionmaker) as session:
            ids = await PortfolioRepository(session).monitored_ids(after, 1000, siren)
        if not ids:
            return outcomes
        await asyncio.gather(*(one(i) for i in ids))
        after = ids[-1]
