"""Shadow, canary guard, drift and parity on a whole API stack (PostgreSQL, Redis, sandbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from b2bscore.decisions.models import Decision
from b2bscore.features.types import CreditRequest, Product
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.metrics import render_metrics
from b2bscore.model import parity, registry
from b2bscore.model import service as model_service
from b2bscore.model.models import ModelAssignment
from b2bscore.model.serving import canary_bucket
from b2bscore.model.tasks import GUARD_ACTOR, ModelSupervisor
from b2bscore.training import world
from tests.model.registry_helpers import BAD, LIVE_DEFAULT
from tests.security.conftest import Stack, bearer, score_body


@pytest.fixture
async def supervisor(lifecycle: Stack) -> AsyncIterator[ModelSupervisor]:
    """A supervisor on the stack; every role unassigned again afterwards."""
    state = lifecycle.state
    assert state.serving is not None
    default = state.serving.live
    # Smaller samples than in production keep the test short; the rules are the same.
    thresholds = model_service.CanaryThresholds(min_requests=10, min_scored=15)
    sup = ModelSupervisor(state, default, thresholds)
    await sup.sync()
    yield sup
    async with create_sessionmaker(lifecycle.engine)() as session:
        await session.execute(delete(ModelAssignment))
        await session.commit()
    await sup.sync()


async def _change(stack: Stack, work: Any) -> None:
    async with create_sessionmaker(stack.engine)() as session:
        await work(session)
        await session.commit()


async def _score(client: httpx.AsyncClient, key: str, siren: str) -> dict[str, Any]:
    response = await client.post("/v1/score", json=score_body(siren), headers=bearer(key))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_shadow_scores_after_the_answer_and_shows_on_the_decision(
    lifecycle: Stack, supervisor: ModelSupervisor
) -> None:
    models_dir = lifecycle.settings.models_dir
    await _change(lifecycle, lambda s: registry.set_shadow(s, models_dir, BAD, actor="test"))
    assert await supervisor.sync()
    assert supervisor.state.serving is not None
    assert supervisor.state.serving.shadow is not None
    sirens = world.sample_sirens(12, 41)
    answers = [await _score(lifecycle.client, lifecycle.keys.writer, s) for s in sirens]
    # The answer does not wait for the shadow: nothing is shadow-scored yet.
    first = await lifecycle.client.get(
        f"/v1/decisions/{answers[0]['decision_id']}", headers=bearer(lifecycle.keys.writer)
    )
    assert first.json()["shadow"] is None
    assert all(a["model"]["id"] == LIVE_DEFAULT for a in answers)

    assert await supervisor.shadow_round(supervisor.state.serving.shadow) >= len(answers)
    for answer in answers:
        got = await lifecycle.client.get(
            f"/v1/decisions/{answer['decision_id']}", headers=bearer(lifecycle.keys.writer)
        )
        shadow = got.json()["shadow"]
        assert shadow["model"] == {"id": BAD, "version": "2026.11.8"}
        # The bad candidate's calibration puts every PD far above the live one.
        assert shadow["probability_of_default"] > answer["probability_of_default"]
        assert got.json()["decision"] == answer["decision"]  # the audit row is untouched
    other = await lifecycle.client.get(
        f"/v1/decisions/{answers[0]['decision_id']}", headers=bearer(lifecycle.keys.other_tenant)
    )
    assert other.status_code == 404
    # A second round finds nothing left to do.
    assert await supervisor.shadow_round(supervisor.state.serving.shadow) == 0

    async with create_sessionmaker(lifecycle.engine)() as session:
        report = await model_service.compare(session)
    assert report["n"] >= len(answers)
    assert report["shadow_models"] == [BAD]
    assert report["pd_shift_mean"] > 0
    assert report["agreement"] < 1.0
    assert report["flips"]
    # One tenant's view: its decisions in one mode, never another tenant's or mode's.
    keys = lifecycle.keys
    async with create_sessionmaker(lifecycle.engine)() as session:
        mine = await model_service.compare(session, tenant_id=keys.tenant_a, mode="test")
        live = await model_service.compare(session, tenant_id=keys.tenant_a, mode="live")
        theirs = await model_service.compare(session, tenant_id=keys.tenant_b, mode="test")
        newest = await model_service.compare(session, tenant_id=keys.tenant_a, mode="test", limit=5)
        with pytest.raises(ValueError, match="one mode"):
            await model_service.compare(session, tenant_id=keys.tenant_a)
    assert len(answers) <= mine["n"] <= report["n"]
    assert live["n"] == 0
    assert newest["n"] == 5
    # Were the tenant ignored, both would count every decision and add up past the total.
    assert mine["n"] + theirs["n"] <= report["n"]


async def test_canary_split_by_siren_and_automatic_rollback_of_a_bad_candidate(
    lifecycle: Stack, supervisor: ModelSupervisor
) -> None:
    models_dir = lifecycle.settings.models_dir
    await _change(
        lifecycle,
        lambda s: registry.set_canary(s, models_dir, BAD, actor="test", percent=50),
    )
    assert await supervisor.sync()
    serving = supervisor.state.serving
    assert serving is not None
    assert serving.canary is not None
    for siren in world.sample_sirens(44, 43):
        answer = await _score(lifecycle.client, lifecycle.keys.writer, siren)
        expected = BAD if canary_bucket(siren) < 50 else LIVE_DEFAULT
        assert answer["model"]["id"] == expected, siren
    assert serving.canary_stats.requests >= 15

    reason = await supervisor.guard_round(serving)
    assert reason is not None
    assert "score PSI" in reason
    async with create_sessionmaker(lifecycle.engine)() as session:
        assert "canary" not in await registry.assignments(session)
        event = (await registry.events(session, 1))[0]
    assert (event.action, event.actor, event.from_model) == (
        "canary_auto_rollback",
        GUARD_ACTOR,
        BAD,
    )
    assert supervisor.state.serving is not None
    assert supervisor.state.serving.canary is None
    metrics, _ = render_metrics()
    assert f'b2bscore_canary_rollbacks_total{{model="{BAD}"}}'.encode() in metrics
    answer = await _score(lifecycle.client, lifecycle.keys.writer, world.sample_sirens(1, 43)[0])
    assert answer["model"]["id"] == LIVE_DEFAULT


async def test_drift_from_recorded_decisions_and_gauges(
    lifecycle: Stack, supervisor: ModelSupervisor
) -> None:
    for siren in world.sample_sirens(20, 47):
        await _score(lifecycle.client, lifecycle.keys.writer, siren)
    live = supervisor.default
    async with create_sessionmaker(lifecycle.engine)() as session:
        report = await model_service.drift(session, live, "1h")
    assert report.n >= 20
    assert set(report.features) == set(live.feature_names)
    assert report.score_psi is not None
    assert report.score_psi >= 0
    assert len(report.score_shares) == len(live.reference.score.expected)  # type: ignore[union-attr]
    assert sum(report.score_shares) == pytest.approx(1.0)
    keys = lifecycle.keys
    async with create_sessionmaker(lifecycle.engine)() as session:
        mine = await model_service.drift(session, live, "1h", tenant_id=keys.tenant_a, mode="test")
        none = await model_service.drift(session, live, "1h", tenant_id=keys.tenant_a, mode="live")
        scores_only = await model_service.drift(
            session, live, "1h", tenant_id=keys.tenant_a, mode="test", with_features=False
        )
        with pytest.raises(ValueError, match="one mode"):
            await model_service.drift(session, live, "1h", mode="test")
    assert 20 <= mine.n <= report.n
    assert mine.score_psi is not None
    assert (none.n, none.score_psi, none.score_shares) == (0, None, ())
    # The score's figures without reading a feature vector: the same numbers.
    assert scores_only.features == {}
    assert (scores_only.n, scores_only.score_psi, scores_only.score_shares) == (
        mine.n,
        mine.score_psi,
        mine.score_shares,
    )
    await supervisor.drift_round(live)
    metrics, _ = render_metrics()
    assert f'b2bscore_model_score_psi{{model="{LIVE_DEFAULT}"}}'.encode() in metrics
    assert b"b2bscore_model_feature_psi{" in metrics


async def test_parity_of_recorded_decisions(lifecycle: Stack) -> None:
    for siren in ("111111118", "444444442", *world.sample_sirens(3, 53)):
        await _score(lifecycle.client, lifecycle.keys.writer, siren)
    async with create_sessionmaker(lifecycle.engine)() as session:
        report = await parity.run(
            session, lifecycle.state.keyring, lifecycle.settings.models_dir, sample=5
        )
        assert report["checked"] == 5, report
        assert report["differing"] == [], report
        # The check can fail: the same row with one recorded feature changed differs.
        row = (
            await session.execute(select(Decision).order_by(Decision.created_at.desc()).limit(1))
        ).scalar_one()
        session.expunge(row)
    # The shadow's lean path (no reasons) decides as the core did, given the same bundle.
    request = CreditRequest(row.siren, row.requested_amount, Product(row.product))
    pd, outcome = model_service.shadow_outcome(
        lifecycle.state.bundles[row.model_id], row.features, request, row.sources
    )
    assert f"{pd:.8f}" == row.probability_of_default
    assert (outcome.score, outcome.grade, outcome.decision) == (row.score, row.grade, row.decision)
    row.features = {**row.features, "annual_revenue": 1.0}
    bundle = lifecycle.state.bundles[row.model_id]
    result = parity.check(row, bundle, lifecycle.state.keyring)
    assert "annual_revenue" in result["features"]
