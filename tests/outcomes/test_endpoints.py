"""POST /v1/decisions/{id}/outcome: idempotent, tenant- and mode-scoped, validated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from b2bscore.kit.db import create_sessionmaker
from b2bscore.model import service as model_service
from tests.security.conftest import Stack, assert_problem_json, bearer, score_body


async def _decision(stack: Stack, key: str, siren: str = "111111118") -> dict[str, Any]:
    response = await stack.client.post("/v1/score", json=score_body(siren), headers=bearer(key))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _outcome(kind: str = "repaid", when: str | None = None) -> dict[str, str]:
    return {"outcome": kind, "date": when or _today()}


class TestRecordOutcome:
    async def test_without_key_is_401(self, stack: Stack) -> None:
        decision = await _decision(stack, stack.keys.writer)
        response = await stack.client.post(
            f"/v1/decisions/{decision['decision_id']}/outcome", json=_outcome()
        )
        assert response.status_code == 401
        assert_problem_json(response)

    async def test_read_only_key_is_403(self, stack: Stack) -> None:
        decision = await _decision(stack, stack.keys.writer)
        response = await stack.client.post(
            f"/v1/decisions/{decision['decision_id']}/outcome",
            json=_outcome(),
            headers=bearer(stack.keys.reader_only),
        )
        assert response.status_code == 403
        assert_problem_json(response)

    async def test_other_tenant_or_other_mode_is_404(self, stack: Stack) -> None:
        decision = await _decision(stack, stack.keys.writer)
        url = f"/v1/decisions/{decision['decision_id']}/outcome"
        for key in (stack.keys.other_tenant, stack.keys.live):
            response = await stack.client.post(url, json=_outcome(), headers=bearer(key))
            assert response.status_code == 404, key
            assert assert_problem_json(response)["code"] == "decision_not_found"
        unknown = await stack.client.post(
            "/v1/decisions/00000000-0000-0000-0000-000000000000/outcome",
            json=_outcome(),
            headers=bearer(stack.keys.writer),
        )
        assert unknown.status_code == 404

    async def test_recorded_once_then_idempotent_then_conflict(self, stack: Stack) -> None:
        decision = await _decision(stack, stack.keys.writer)
        url = f"/v1/decisions/{decision['decision_id']}/outcome"
        first = await stack.client.post(
            url, json=_outcome("default"), headers=bearer(stack.keys.writer)
        )
        assert first.status_code == 201, first.text
        assert first.json()["outcome"] == "default"
        assert first.json()["mode"] == "test"
        again = await stack.client.post(
            url, json=_outcome("default"), headers=bearer(stack.keys.writer)
        )
        assert again.status_code == 200
        assert again.json() == first.json()
        other = await stack.client.post(
            url, json=_outcome("repaid"), headers=bearer(stack.keys.writer)
        )
        assert other.status_code == 409
        assert assert_problem_json(other)["code"] == "outcome_conflict"
        read = await stack.client.get(url, headers=bearer(stack.keys.reader_only))
        assert read.status_code == 200
        assert read.json() == first.json()
        hidden = await stack.client.get(url, headers=bearer(stack.keys.other_tenant))
        assert hidden.status_code == 404

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"outcome": "paid", "date": "2026-12-01"}, "outcome"),
            ({"outcome": "repaid"}, "date"),
            ({"outcome": "repaid", "date": "2026-13-01"}, "date"),
            ({"outcome": "repaid", "date": "2026-12-01", "extra": 1}, "extra"),
        ],
    )
    async def test_invalid_body_is_422_naming_the_field(
        self, stack: Stack, body: dict[str, Any], field: str
    ) -> None:
        decision = await _decision(stack, stack.keys.writer)
        response = await stack.client.post(
            f"/v1/decisions/{decision['decision_id']}/outcome",
            json=body,
            headers=bearer(stack.keys.writer),
        )
        assert response.status_code == 422
        assert field in response.text

    async def test_date_in_the_future_or_before_the_decision_is_422(self, stack: Stack) -> None:
        decision = await _decision(stack, stack.keys.writer)
        url = f"/v1/decisions/{decision['decision_id']}/outcome"
        now = datetime.now(UTC).date()
        for when in (now + timedelta(days=1), now - timedelta(days=400)):
            response = await stack.client.post(
                url, json=_outcome("repaid", when.isoformat()), headers=bearer(stack.keys.writer)
            )
            assert response.status_code == 422
            assert assert_problem_json(response)["errors"][0]["field"] == "date"
        assert (await stack.client.get(url, headers=bearer(stack.keys.writer))).status_code == 404


async def test_performance_reports_realised_defaults_by_grade(stack: Stack) -> None:
    for siren, kind in (("111111118", "repaid"), ("333333334", "default")):
        decision = await _decision(stack, stack.keys.other_tenant, siren)
        response = await stack.client.post(
            f"/v1/decisions/{decision['decision_id']}/outcome",
            json=_outcome(kind),
            headers=bearer(stack.keys.other_tenant),
        )
        assert response.status_code == 201
    async with create_sessionmaker(stack.engine)() as session:
        report = await model_service.performance(session, stack.keys.tenant_b)
    assert report["n"] == 2
    assert sum(g["defaults"] for g in report["by_grade"].values()) == 1
    (month,) = report["by_month"].values()
    assert month["auc"] == 1.0  # the defaulted company had the higher PD
