"""The story of one score request, top to bottom.

gather the sources under the deadline -> build features -> score with contributions ->
reasons -> policy -> durable audit row -> answer. Every answer is built from the audit row
that was committed for it, so what the lender reads is exactly what was recorded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from b2bscore.books.service import books_namespace, uploaded_reader
from b2bscore.consents.service import DecisionConsents, consented_bank
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.models import Decision
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.decisions.service import (
    AuditUnavailable,
    DecisionRecord,
    IdempotencyConflict,
)
from b2bscore.decisions.writer import AuditWriter
from b2bscore.features.build import build_features
from b2bscore.features.types import CreditRequest
from b2bscore.kit.cache import Cache
from b2bscore.kit.db import SessionOpener, opened_session
from b2bscore.kit.deadline import FAULT_MARGIN_SECONDS, RETRY_AFTER_SECONDS, within
from b2bscore.kit.jobs import Jobs
from b2bscore.kit.logging import throttle
from b2bscore.kit.metrics import (
    AUDIT_FAILURES,
    DECISIONS,
    PROBABILITY_OF_DEFAULT,
    SCORES,
    STAGE_LATENCY,
)
from b2bscore.kit.problems import Problem
from b2bscore.kit.settings import Settings
from b2bscore.model.bundle import ModelBundle
from b2bscore.model.core import decide_on
from b2bscore.model.reasons import Reason
from b2bscore.scoring import idempotency
from b2bscore.scoring.schemas import ScoreRequest, ScoreResponse
from b2bscore.sources.clients import ProviderClients
from b2bscore.sources.fanout import BankSnapshot, ConsentedBank, UploadedBooks, gather_sources
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import SourceBundle, SourceResult
from b2bscore.tenants.auth import Principal

if TYPE_CHECKING:
    from b2bscore.kit.state import AppState

log = logging.getLogger(__name__)

# The audit commit's least time, even when the sources used the budget up to their cut
# (deadline - scoring_reserve_ms, 120 ms by default): a decision already made is worth a
# short wait. With the default reserve the answer still comes by the deadline plus
# kit.deadline.FAULT_MARGIN_SECONDS.
MIN_AUDIT_SECONDS = 0.2


def request_fingerprint(body: ScoreRequest) -> str:
    """sha256 of the canonical request, to tell a retry from a different request."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ScoringTools:
    """The long-lived things a decision uses: settings, model, providers, cache, stores."""

    settings: Settings
    bundle: ModelBundle
    clients: ProviderClients | None  # the providers of the caller's mode (sandbox or live)
    cache: Cache
    audit: AuditWriter
    tokenizer: Tokenizer
    sessions: SessionOpener  # the audit store: idempotency lookups and uploaded books
    keyring: DataKeyring | None = None  # decrypts the lender's uploaded books (None: unread)
    jobs: Jobs | None = None  # queues a consent's sync when a decision finds it stale

    @classmethod
    def of(
        cls,
        state: AppState,
        mode: str,
        *,
        bundle: ModelBundle | None = None,
        sessions: SessionOpener | None = None,
    ) -> ScoringTools:
        """The tools of one mode's decisions: the API, the console, checks and batches alike."""
        return cls(
            settings=state.settings,
            bundle=bundle if bundle is not None else state.bundle,
            clients=state.sandbox_clients if mode == "test" else state.live_clients,
            cache=state.cache,
            audit=state.audit,
            tokenizer=state.tokenizer,
            sessions=sessions if sessions is not None else state.sessionmaker,
            # The lender's own data: its uploaded books and consented bank data.
            keyring=state.keyring,
            jobs=state.jobs,
        )


async def score_request(
    body: ScoreRequest,
    *,
    principal: Principal,
    tools: ScoringTools,
    idempotency_key: str | None,
    started: float,
) -> ScoreResponse:
    """Decide on one request inside the budget and record it before answering."""
    settings, cache = tools.settings, tools.cache
    deadline = started + settings.deadline_ms / 1000
    fingerprint = request_fingerprint(body)

    async def decide() -> ScoreResponse:
        return await decide_and_record(
            body,
            principal=principal,
            tools=tools,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            started=started,
            deadline=deadline,
        )

    if not idempotency_key:
        return await decide()

    tenant_id, mode = principal.tenant_id, principal.mode
    try:
        earlier_id = await idempotency.claim(
            cache, tenant_id, mode, idempotency_key, fingerprint, deadline + FAULT_MARGIN_SECONDS
        )
    except idempotency.InFlight:
        # The request holding the key here ran out of time; another process may have
        # recorded a decision for it meanwhile (no shared cache): the store decides.
        earlier = await _recorded(
            tools.sessions,
            principal,
            _read_deadline(deadline),
            decision_id=None,
            idempotency_key=idempotency_key,
        )
        if earlier is None:
            raise idempotency.in_flight_problem() from None
        return _replayed_answer(earlier, fingerprint, started)
    # Past the cache's 24 hours (or after a 503 whose row committed late) the audit store
    # still knows the key.
    earlier = await _recorded(
        tools.sessions, principal, deadline, decision_id=earlier_id, idempotency_key=idempotency_key
    )
    if earlier is not None:
        if earlier_id is None:  # this request claimed a key the store already knew
            await idempotency.complete(
                cache, tenant_id, mode, idempotency_key, earlier.request_hash, earlier.id
            )
        return _replayed_answer(earlier, fingerprint, started)
    try:
        answer = await decide()
    except BaseException:
        # No decision was answered: free the key so that the client's retry can decide,
        # or find the row that committed after this request gave up on it.
        await idempotency.release(cache, tenant_id, mode, idempotency_key)
        raise
    await idempotency.complete(
        cache, tenant_id, mode, idempotency_key, fingerprint, answer.decision_id
    )
    return answer


def _read_deadline(deadline: float) -> float:
    """Time to read a decision that is known to be recorded, even at the budget's end."""
    # Answering with it beats a 503 or a 409: one indexed read, within the fault margin.
    return max(deadline + FAULT_MARGIN_SECONDS, time.monotonic() + FAULT_MARGIN_SECONDS)


async def _recorded(
    sessions: SessionOpener,
    principal: Principal,
    deadline: float,
    *,
    decision_id: str | None,
    idempotency_key: str | None = None,
) -> Decision | None:
    """The caller's decision by id (else by idempotency key), read within the deadline."""

    async def read() -> Decision | None:
        async with opened_session(sessions) as session:
            decisions = DecisionRepository(session)
            if decision_id is not None:
                return await decisions.get(principal.tenant_id, decision_id, mode=principal.mode)
            if idempotency_key is None:
                return None
            return await decisions.get_by_idempotency_key(
                principal.tenant_id, principal.mode, idempotency_key
            )

    return await within(deadline, read(), store="database")


async def decide_and_record(
    body: ScoreRequest,
    *,
    principal: Principal,
    tools: ScoringTools,
    idempotency_key: str | None,
    fingerprint: str,
    started: float,
    deadline: float,
) -> ScoreResponse:
    """The decision itself: sources, core, audit row, answer."""
    settings = tools.settings
    request = CreditRequest(body.siren, body.requested_amount, body.product)
    as_of = datetime.now(UTC).date()

    # 1. Fresh data from the three providers, in parallel, each cut off at the deadline.
    sources_deadline = deadline - settings.scoring_reserve_ms / 1000
    sources = await gather_sources(
        request.siren,
        tools.clients,
        deadline=sources_deadline,
        cache=tools.cache,
        tokenizer=tools.tokenizer,
        as_of=as_of,
        cache_namespace=_cache_namespace(principal),
        uploaded_books=_uploaded_books(tools, principal),
        accounting_namespace=books_namespace(principal.tenant_id, principal.mode),
        bank_snapshot=_consented_bank(tools, principal, sources_deadline),
    )
    return await decide_on_sources(
        body,
        sources,
        principal=principal,
        tools=tools,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        started=started,
        deadline=deadline,
    )


async def decide_on_sources(
    body: ScoreRequest,
    sources: SourceBundle,
    *,
    principal: Principal,
    tools: ScoringTools,
    idempotency_key: str | None,
    fingerprint: str,
    started: float,
    deadline: float,
) -> ScoreResponse:
    """Steps 2-6 on sources already gathered (a monitoring re-check gathers its own)."""
    bundle = tools.bundle
    request = CreditRequest(body.siren, body.requested_amount, body.product)

    # 2-5. The decision core: features, one pred_contrib call, reasons, policy.
    core_started = time.perf_counter()
    vector = build_features(sources.bank, sources.books, sources.record, request)
    core = decide_on(
        bundle,
        vector,
        request,
        has_bank=sources.bank is not None,
        has_books=sources.books is not None,
        has_registry=sources.record is not None,
    )
    scored, outcome, reasons = core.scored, core.outcome, core.reasons
    STAGE_LATENCY.labels("decision_core").observe(time.perf_counter() - core_started)

    # 6. The audit row, committed before anything is answered.
    record = DecisionRecord(
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        mode=principal.mode,
        siren=request.siren,
        product=request.product.value,
        requested_amount=request.requested_amount,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        request=body.model_dump(mode="json"),
        features=vector.as_dict(),
        model_id=bundle.model_id,
        model_version=bundle.version,
        probability_of_default=Decimal(f"{scored.probability_of_default:.8f}"),
        score=outcome.score,
        grade=outcome.grade,
        decision=outcome.decision,
        proposed_limit=outcome.proposed_limit,
        reasons=[_reason_json(r) for r in reasons],
        sources=_sources_json(sources),
        degraded=sources.degraded,
        latency_ms=_elapsed_ms(started),
        payloads={r.name.value: r.packed_raw for r in sources.all() if r.packed_raw},
    )
    try:
        row = await _record(tools.audit, record, deadline)
    except IdempotencyConflict as conflict:
        # A concurrent retry with the same key committed first: answer with its decision.
        earlier = await _recorded(
            tools.sessions, principal, _read_deadline(deadline), decision_id=conflict.decision_id
        )
        if earlier is None:
            raise Problem(409, "idempotency_conflict", "Idempotency key in use") from conflict
        return _replayed_answer(earlier, fingerprint, started)
    except AuditUnavailable as error:
        AUDIT_FAILURES.inc()
        throttle.log(log, logging.WARNING, "audit_unavailable", "no decision: %s", error)
        raise Problem(
            503,
            "audit_unavailable",
            "Decision not issued",
            "The audit record could not be committed in time, so no decision was answered. "
            "It may still be recorded: a retry with the same Idempotency-Key returns that "
            "decision if one was recorded (without a key, a retry decides anew).",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from error
    DECISIONS.labels(outcome.decision, principal.mode).inc()
    SCORES.observe(outcome.score)
    PROBABILITY_OF_DEFAULT.observe(scored.probability_of_default)
    return answer_from_decision(row, latency_ms=_elapsed_ms(started))


async def _record(audit: AuditWriter, record: DecisionRecord, deadline: float) -> Decision:
    """Commit the audit row, giving up (no decision) when the store is too slow."""
    audit_started = time.perf_counter()
    # A stalled database must not hold the request forever. A row that commits after we
    # gave up is a recorded decision nobody was told about: the writer notes it in
    # late_commits, and a retry with the same Idempotency-Key is answered with it.
    timeout = max(deadline - time.monotonic(), MIN_AUDIT_SECONDS)
    row = await audit.record(record, give_up_after=timeout)
    STAGE_LATENCY.labels("audit_commit").observe(time.perf_counter() - audit_started)
    return row


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def lender_data(
    tools: ScoringTools, principal: Principal, sources_deadline: float
) -> tuple[UploadedBooks | None, str, BankSnapshot | None]:
    """The lender's own data a decision reads beside the providers (a monitoring check too):
    its uploaded books, their cache namespace, its consented bank data."""
    return (
        _uploaded_books(tools, principal),
        books_namespace(principal.tenant_id, principal.mode),
        _consented_bank(tools, principal, sources_deadline),
    )


def _uploaded_books(tools: ScoringTools, principal: Principal) -> UploadedBooks | None:
    # Asked only on a miss of the accounting cache, beside the other sources.
    if tools.keyring is None:
        return None
    return uploaded_reader(tools.sessions, tools.keyring, principal.tenant_id, principal.mode)


def _consented_bank(
    tools: ScoringTools, principal: Principal, deadline: float
) -> BankSnapshot | None:
    # The lender's consent for the company, asked beside the other sources: its fresh
    # snapshot, else its bank now with its token (within the deadline; a sync queued),
    # else its stale snapshot with the age shown.
    keyring = tools.keyring
    if keyring is None:
        return None
    consents = DecisionConsents(
        settings=tools.settings,
        sessions=tools.sessions,
        keyring=keyring,
        tokenizer=tools.tokenizer,
        clients=tools.clients,
        jobs=tools.jobs,
    )

    async def read(siren: str) -> ConsentedBank | None:
        return await consented_bank(
            consents,
            tenant_id=principal.tenant_id,
            mode=principal.mode,
            siren=siren,
            deadline=deadline,
        )

    return read


def _cache_namespace(principal: Principal) -> str:
    # Per tenant and mode: live data was consented to one lender and must never be served
    # to another; and even in the public sandbox world a `cached` status would tell one
    # tenant which companies another one scored moments ago.
    return f"{principal.mode}:{principal.tenant_id}"


def answer_from_decision(row: Decision, *, latency_ms: float | None = None) -> ScoreResponse:
    """The wire answer for a recorded decision; latency_ms is this answer's own latency."""
    return ScoreResponse.model_validate(
        {
            "decision_id": row.id,
            "mode": row.mode,
            "created_at": row.created_at,
            "siren": row.siren,
            "product": row.product,
            "requested_amount": row.requested_amount,
            "probability_of_default": float(row.probability_of_default),
            "score": row.score,
            "grade": row.grade,
            "decision": row.decision,
            "proposed_limit": row.proposed_limit,
            "reasons": row.reasons,
            "sources": row.sources,
            "model": {"id": row.model_id, "version": row.model_version},
            "degraded": row.degraded,
            "latency_ms": row.latency_ms if latency_ms is None else latency_ms,
        }
    )


def _replayed_answer(previous: Decision, fingerprint: str, started: float) -> ScoreResponse:
    if previous.request_hash != fingerprint:
        raise Problem(
            409,
            "idempotency_key_reused",
            "Idempotency key reused with a different request",
            "This Idempotency-Key was used for another request body; use a new key.",
        )
    return answer_from_decision(previous, latency_ms=_elapsed_ms(started))


def _reason_json(reason: Reason) -> dict[str, Any]:
    return {
        "code": reason.code,
        "family": reason.family,
        "direction": reason.direction,
        "contribution": round(reason.contribution, 6),
        "feature": reason.feature,
        "value": reason.value,
        "label_fr": reason.label_fr,
        "label_en": reason.label_en,
    }


def _source_json(result: SourceResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": result.status.value,
        "latency_ms": round(result.latency_ms, 3),
        "as_of": result.as_of.isoformat() if result.as_of else None,
        "detail": result.detail,
    }
    if result.snapshot is not None:
        out["snapshot"] = dict(result.snapshot)
    return out


def _sources_json(sources: SourceBundle) -> dict[str, Any]:
    return {r.name.value: _source_json(r) for r in sources.all()}
