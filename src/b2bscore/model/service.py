"""What the registry learns from recorded decisions: shadow scores, drift, comparison,
performance on outcomes, canary health, parity. Every function takes its session.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.models import Decision
from b2bscore.decisions.replay import ReplayUnavailable, vector_from_features
from b2bscore.features.catalog import FEATURE_NAMES
from b2bscore.features.types import CreditRequest, Product
from b2bscore.model.bundle import ModelBundle
from b2bscore.model.drift import DriftReport, drift_report, fit_bins, psi
from b2bscore.model.models import ShadowScore
from b2bscore.model.policy import PolicyOutcome, decide
from b2bscore.model.scorer import score
from b2bscore.outcomes.models import BAD_OUTCOMES, DecisionOutcome

SHADOW_BATCH: Final = 200
# Audit rows carry the time their request started and commit a little later (group
# commit): a sweep resumes this far before the last row it scored so none is skipped.
SHADOW_LATE_COMMIT: Final = timedelta(minutes=1)
# Drift and canary statistics read at most this many recent decisions per model.
DRIFT_SAMPLE: Final = 20_000
CANARY_SAMPLE: Final = 5_000
_WINDOW: Final = re.compile(r"(\d+)([dhm])")
_UNITS: Final = {"d": "days", "h": "hours", "m": "minutes"}


def parse_window(window: str) -> timedelta:
    """'7d', '24h', '30m' -> timedelta; ValueError otherwise."""
    match = _WINDOW.fullmatch(window.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"window must look like 7d, 24h or 30m, not {window!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


# --- shadow ------------------------------------------------------------------------


_USABLE: Final = frozenset({"ok", "cached"})  # statuses under which a source fed the core


def _usable(sources: Any, name: str) -> bool:
    source = sources.get(name) if isinstance(sources, Mapping) else None
    return isinstance(source, Mapping) and source.get("status") in _USABLE


def shadow_outcome(
    shadow: ModelBundle,
    features: Mapping[str, Any],
    request: CreditRequest,
    sources: Any,
) -> tuple[float, PolicyOutcome]:
    """The shadow's PD and policy outcome on a recorded decision's inputs.

    The same score and policy as the decision core, without the reason codes: nobody
    reads a shadow's reasons, and they are a good part of the core's cost.
    """
    vector = vector_from_features(features)
    pd = score(shadow, vector).probability_of_default
    outcome = decide(
        pd,
        vector,
        request,
        has_bank=_usable(sources, "open_banking"),
        has_books=_usable(sources, "accounting"),
        has_registry=_usable(sources, "registry"),
        thresholds=shadow.policy,
    )
    return pd, outcome


async def shadow_sweep(
    session: AsyncSession, shadow: ModelBundle, since: datetime, limit: int = SHADOW_BATCH
) -> tuple[int, datetime | None]:
    """Score with the shadow the decisions since ``since`` it has not scored.

    Runs after the answers were sent (a periodic task), on each decision's recorded
    feature vector, so the shadow sees exactly what the live model saw. Returns the rows
    written and the creation time of the last decision seen (where the next sweep resumes).
    Plain rows in, one multi-row insert out: no ORM object per decision.
    """
    scored = select(ShadowScore.decision_id).where(ShadowScore.decision_id == Decision.id)
    rows = await session.execute(
        select(
            Decision.id,
            Decision.tenant_id,
            Decision.created_at,
            Decision.siren,
            Decision.product,
            Decision.requested_amount,
            Decision.features,
            Decision.sources,
        )
        .where(Decision.created_at >= since, ~scored.exists())
        .order_by(Decision.created_at)
        .limit(limit)
    )
    now = datetime.now(UTC)
    values: list[dict[str, Any]] = []
    last: datetime | None = None
    for decision_id, tenant_id, created_at, siren, product, amount, features, sources in rows:
        last = created_at
        # The sweep shares the worker's event loop with live requests: hand it back after
        # each decision so that no request waits behind more than one shadow score.
        await asyncio.sleep(0)
        try:
            request = CreditRequest(siren, amount, Product(product))
            pd, outcome = shadow_outcome(shadow, features, request, sources)
        except (ReplayUnavailable, ValueError):
            continue  # a row whose inputs cannot be re-read has no shadow
        values.append(
            {
                "decision_id": decision_id,
                "tenant_id": tenant_id,
                "model_id": shadow.model_id,
                "model_version": shadow.version,
                "probability_of_default": f"{pd:.8f}",
                "score": outcome.score,
                "grade": outcome.grade,
                "decision": outcome.decision,
                "created_at": now,
            }
        )
    if values:
        await session.execute(insert(ShadowScore), values)
    await session.commit()
    return len(values), last


async def shadow_of(session: AsyncSession, tenant_id: str, decision_id: str) -> ShadowScore | None:
    """The shadow score of one decision of a tenant."""
    row = await session.execute(
        select(ShadowScore).where(
            ShadowScore.decision_id == decision_id, ShadowScore.tenant_id == tenant_id
        )
    )
    return row.scalar_one_or_none()


def auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """ROC AUC by ranks (ties averaged); None without both classes."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


async def compare(
    session: AsyncSession,
    since: datetime | None = None,
    *,
    tenant_id: str | None = None,
    mode: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Live against shadow on the same decisions: agreement, flips, PD shift, AUC.

    Platform-wide by default; given a tenant and a mode, on that tenant's decisions in it.
    With a limit, on the newest that many decisions (what a page can afford to read).
    """
    if (tenant_id is None) != (mode is None):
        raise ValueError("a tenant's comparison is read in one mode: give both or neither")
    query = (
        select(
            Decision.decision,
            Decision.probability_of_default,
            ShadowScore.decision,
            ShadowScore.probability_of_default,
            ShadowScore.model_id,
            DecisionOutcome.outcome,
        )
        .join(ShadowScore, ShadowScore.decision_id == Decision.id)
        .outerjoin(DecisionOutcome, DecisionOutcome.decision_id == Decision.id)
    )
    if since is not None:
        query = query.where(Decision.created_at >= since)
    if tenant_id is not None:
        query = query.where(Decision.tenant_id == tenant_id, Decision.mode == mode)
    if limit is not None:
        query = query.order_by(Decision.created_at.desc()).limit(limit)
    rows = (await session.execute(query)).all()
    flips: dict[str, int] = defaultdict(int)
    shifts: list[float] = []
    labelled: list[tuple[int, float, float]] = []
    agree = 0
    shadows: set[str] = set()
    for live_decision, live_pd, shadow_decision, shadow_pd, shadow_id, outcome in rows:
        shadows.add(shadow_id)
        if live_decision == shadow_decision:
            agree += 1
        else:
            flips[f"{live_decision}->{shadow_decision}"] += 1
        shifts.append(float(shadow_pd) - float(live_pd))
        if outcome is not None:
            labelled.append((int(outcome in BAD_OUTCOMES), float(live_pd), float(shadow_pd)))
    n = len(rows)
    return {
        "n": n,
        "shadow_models": sorted(shadows),
        "agreement": round(agree / n, 6) if n else None,
        "flips": dict(sorted(flips.items())),
        "pd_shift_mean": round(float(np.mean(shifts)), 8) if shifts else None,
        "pd_shift_mean_abs": round(float(np.mean(np.abs(shifts))), 8) if shifts else None,
        "with_outcome": len(labelled),
        "auc_live": auc([r[0] for r in labelled], [r[1] for r in labelled]),
        "auc_shadow": auc([r[0] for r in labelled], [r[2] for r in labelled]),
    }


# --- drift -------------------------------------------------------------------------


async def drift(
    session: AsyncSession,
    bundle: ModelBundle,
    window: str,
    *,
    now: datetime | None = None,
    tenant_id: str | None = None,
    mode: str | None = None,
    with_features: bool = True,
) -> DriftReport:
    """PSI of the decisions a bundle made over the window against its training reference.

    Platform-wide by default; given a tenant and a mode, over that tenant's decisions in
    that mode only (what one tenant's analysts may see). Without features, the score's
    alone: the feature vectors, most of what is read, are then left in the table.
    """
    if bundle.reference is None:
        raise ValueError(f"{bundle.model_id} has no drift reference")
    if (tenant_id is None) != (mode is None):
        raise ValueError("a tenant's drift is read in one mode: give both or neither")
    since = (now or datetime.now(UTC)) - parse_window(window)
    columns = (Decision.score, Decision.features) if with_features else (Decision.score,)
    query = (
        select(*columns)
        .where(
            Decision.created_at >= since,
            Decision.model_id == bundle.model_id,
            Decision.model_version == bundle.version,
        )
        .order_by(Decision.created_at.desc())
        .limit(DRIFT_SAMPLE)
    )
    if tenant_id is not None:
        query = query.where(Decision.tenant_id == tenant_id, Decision.mode == mode)
    rows = (await session.execute(query)).all()
    return drift_report(
        bundle.reference,
        [r[1] for r in rows] if with_features else None,
        [float(r[0]) for r in rows],
        window=window,
    )


async def models_used(
    session: AsyncSession, since: datetime, *, tenant_id: str, mode: str
) -> list[tuple[str, str, int]]:
    """(model id, version, decisions) of a tenant's decisions in mode since a time, most first."""
    rows = await session.execute(
        select(Decision.model_id, Decision.model_version, func.count())
        .where(
            Decision.tenant_id == tenant_id,
            Decision.mode == mode,
            Decision.created_at >= since,
        )
        .group_by(Decision.model_id, Decision.model_version)
        .order_by(func.count().desc(), Decision.model_id, Decision.model_version)
    )
    return [(model_id, version, int(n)) for model_id, version, n in rows.all()]


# --- performance on outcomes -------------------------------------------------------


async def performance(session: AsyncSession, tenant_id: str | None = None) -> dict[str, Any]:
    """Realised default rate by grade and AUC by month of decision and by model version."""
    query = select(
        Decision.grade,
        Decision.probability_of_default,
        Decision.created_at,
        Decision.model_version,
        DecisionOutcome.outcome,
    ).join(DecisionOutcome, DecisionOutcome.decision_id == Decision.id)
    if tenant_id is not None:
        query = query.where(Decision.tenant_id == tenant_id)
    rows = (await session.execute(query)).all()
    by_grade: dict[str, list[int]] = defaultdict(list)
    by_month: dict[str, list[tuple[int, float]]] = defaultdict(list)
    by_version: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for grade, pd, created_at, version, outcome in rows:
        bad = int(outcome in BAD_OUTCOMES)
        by_grade[grade].append(bad)
        by_month[created_at.strftime("%Y-%m")].append((bad, float(pd)))
        by_version[version].append((bad, float(pd)))

    def summary(pairs: list[tuple[int, float]]) -> dict[str, Any]:
        labels = [p[0] for p in pairs]
        return {
            "n": len(pairs),
            "defaults": sum(labels),
            "default_rate": round(sum(labels) / len(pairs), 6),
            "mean_pd": round(float(np.mean([p[1] for p in pairs])), 6),
            "auc": auc(labels, [p[1] for p in pairs]),
        }

    return {
        "n": len(rows),
        "by_grade": {
            g: {"n": len(v), "defaults": sum(v), "default_rate": round(sum(v) / len(v), 6)}
            for g, v in sorted(by_grade.items())
        },
        "by_month": {m: summary(v) for m, v in sorted(by_month.items())},
        "by_version": {m: summary(v) for m, v in sorted(by_version.items())},
    }


# --- canary health -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryThresholds:
    """When the canary guard rolls a candidate back (documented in docs/MODEL.md)."""

    min_requests: int = 20
    max_error_rate: float = 0.02
    latency_ratio: float = 1.5  # candidate p95 over live p95
    latency_floor_ms: float = 50.0  # and at least this much slower in absolute terms
    max_score_psi: float = 0.25
    min_scored: int = 50


def _p95(values: Sequence[float]) -> float:
    return float(np.quantile(np.asarray(values, dtype=np.float64), 0.95))


async def canary_verdict(
    session: AsyncSession,
    live: ModelBundle,
    canary: ModelBundle,
    since: datetime,
    *,
    requests: int,
    errors: int,
    thresholds: CanaryThresholds,
) -> str | None:
    """Why the candidate must be rolled back, or None while it is healthy."""
    if requests >= thresholds.min_requests and errors / requests > thresholds.max_error_rate:
        return f"error rate {errors}/{requests} above {thresholds.max_error_rate:.0%}"

    async def recent(model_id: str) -> list[tuple[int, float]]:
        rows = await session.execute(
            select(Decision.score, Decision.latency_ms)
            .where(Decision.created_at >= since, Decision.model_id == model_id)
            .order_by(Decision.created_at.desc())
            .limit(CANARY_SAMPLE)
        )
        return [(int(r[0]), float(r[1])) for r in rows]

    live_rows = await recent(live.model_id)
    canary_rows = await recent(canary.model_id)
    if len(live_rows) >= thresholds.min_requests and len(canary_rows) >= thresholds.min_requests:
        live_p95 = _p95([r[1] for r in live_rows])
        canary_p95 = _p95([r[1] for r in canary_rows])
        if (
            canary_p95 > thresholds.latency_ratio * live_p95
            and canary_p95 - live_p95 > thresholds.latency_floor_ms
        ):
            return f"p95 latency {canary_p95:.0f} ms against {live_p95:.0f} ms live"
    if len(live_rows) >= thresholds.min_scored and len(canary_rows) >= thresholds.min_scored:
        bins = fit_bins(np.asarray([float(r[0]) for r in live_rows]))
        counts = bins.counts([float(r[0]) for r in canary_rows])
        score_psi = psi(bins.expected, counts / counts.sum())
        if math.isfinite(score_psi) and score_psi > thresholds.max_score_psi:
            return f"score PSI {score_psi:.3f} against live above {thresholds.max_score_psi}"
    return None


async def labelled_features(session: AsyncSession) -> tuple[np.ndarray, np.ndarray]:
    """The recorded feature vectors of decisions with an outcome, and 1 for a default."""
    rows = (
        await session.execute(
            select(Decision.features, DecisionOutcome.outcome)
            .join(DecisionOutcome, DecisionOutcome.decision_id == Decision.id)
            .order_by(Decision.created_at, Decision.id)
        )
    ).all()
    vectors = [vector_from_features(features).values for features, _ in rows]
    x = np.vstack(vectors) if vectors else np.empty((0, len(FEATURE_NAMES)))
    y = np.asarray([float(outcome in BAD_OUTCOMES) for _, outcome in rows], dtype=np.float64)
    return x, y
