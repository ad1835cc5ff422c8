"""POST /v1/score against real PostgreSQL, Redis and sandbox providers over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.decisions.models import Decision
from b2bscore.tenants.keys import hash_key
from b2bscore.tenants.models import ApiKey
from b2bscore.training.world import SCENARIOS
from tests.scoring.conftest import Keys, bearer, count_decisions
from tests.security.conftest import partial_data_allowed

HEALTHY = SCENARIOS["healthy"]
THIN_FILE = SCENARIOS["thin_file_startup"]
CASH_STRAPPED = SCENARIOS["cash_strapped"]
COLLECTIVE = SCENARIOS["collective_proceedings"]
CLOSED = SCENARIOS["closed_company"]
BANK_TIMEOUT = SCENARIOS["bank_timeout"]
REGISTRY_ERROR = SCENARIOS["registry_error"]
ACCOUNTING_MALFORMED = SCENARIOS["accounting_malformed"]
BANK_TRUNCATED = SCENARIOS["bank_truncated"]
NO_BANK_CONSENT = SCENARIOS["no_bank_consent"]


def body(
    siren: str = HEALTHY, amount: str = "25000.00", product: str = "term_loan"
) -> dict[str, Any]:
    """A valid request body."""
    return {"siren": siren, "requested_amount": amount, "product": product}


async def _tenant_of(engine: AsyncEngine, key: str) -> str:
    async with engine.connect() as connection:
        statement = select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(key))
        return str((await connection.execute(statement)).scalar_one())


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is a problem+json with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert "Traceback" not in response.text
    return problem


class TestScoreAuth:
    async def test_missing_key_is_401(self, api: httpx.AsyncClient) -> None:
        response = await api.post("/v1/score", json=body())
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_unknown_key_is_401(self, api: httpx.AsyncClient) -> None:
        response = await api.post("/v1/score", json=body(), headers=bearer("sk_test_" + "x" * 43))
        assert_problem(response, 401, "unauthorized")

    async def test_key_without_score_scope_is_403(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post("/v1/score", json=body(), headers=bearer(keys.reader_only))
        assert_problem(response, 403, "insufficient_scope")

    async def test_live_key_without_live_providers_is_503(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        before = await count_decisions(pg_engine)
        response = await api.post("/v1/score", json=body(), headers=bearer(keys.live))
        problem = assert_problem(response, 503, "providers_not_configured")
        assert int(response.headers["retry-after"]) >= 1
        assert "set-partial-data" in problem["detail"]
        assert await count_decisions(pg_engine) == before  # no decision made on nothing

    async def test_live_key_never_reaches_the_sandbox(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        tenant_id = await _tenant_of(pg_engine, keys.live)
        async with partial_data_allowed(pg_engine, tenant_id):
            response = await api.post("/v1/score", json=body(), headers=bearer(keys.live))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["mode"] == "live"
        # No live provider is configured here: every source is unavailable, never sandbox data.
        assert {s["status"] for s in answer["sources"].values()} == {"unavailable"}
        assert answer["decision"] == "review"
        assert answer["degraded"] is True


class TestScoreDecisions:
    async def test_healthy_company_is_approved_with_reasons(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        response = await api.post("/v1/score", json=body(HEALTHY), headers=bearer(keys.writer))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["decision"] == "approve"
        assert answer["siren"] == HEALTHY
        assert 0 < answer["probability_of_default"] < 0.03
        assert 0 <= answer["score"] <= 1000
        assert answer["degraded"] is False
        assert {s["status"] for s in answer["sources"].values()} <= {"ok", "cached"}
        assert answer["reasons"], "every decision is explained"
        for reason in answer["reasons"]:
            assert reason["code"]
            assert reason["label_fr"]
            assert reason["label_en"]
        assert isinstance(answer["proposed_limit"], str)
        assert answer["latency_ms"] < 500
        async with pg_engine.connect() as connection:
            row = (
                await connection.execute(
                    select(Decision).where(Decision.id == answer["decision_id"])
                )
            ).one()
        assert row.decision == "approve"
        assert row.siren == HEALTHY

    async def test_collective_proceedings_is_declined_with_that_reason(
        self, api: httpx.AsyncClient, keys: Keys
    ) -> None:
        response = await api.post("/v1/score", json=body(COLLECTIVE), headers=bearer(keys.writer))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["decision"] == "decline"
        assert answer["reasons"][0]["code"] == "RULE_COLLECTIVE_PROCEEDINGS"
        assert answer["reasons"][0]["direction"] == "adverse"

    async def test_closed_company_is_declined(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post("/v1/score", json=body(CLOSED), headers=bearer(keys.writer))
        answer = response.json()
        assert answer["decision"] == "decline"
        assert answer["reasons"][0]["code"] == "RULE_CLOSED"

    async def test_cash_strapped_company_is_not_approved(
        self, api: httpx.AsyncClient, keys: Keys
    ) -> None:
        response = await api.post(
            "/v1/score", json=body(CASH_STRAPPED), headers=bearer(keys.writer)
        )
        answer = response.json()
        assert answer["decision"] in {"review", "decline"}
        assert answer["probability_of_default"] > 0.03
        assert any(r["direction"] == "adverse" for r in answer["reasons"])

    async def test_young_company_asking_big_right_after_connecting_is_reviewed(
        self, api: httpx.AsyncClient, keys: Keys
    ) -> None:
        small = await api.post(
            "/v1/score", json=body(THIN_FILE, "3000.00"), headers=bearer(keys.writer)
        )
        large = await api.post(
            "/v1/score", json=body(THIN_FILE, "80000.00"), headers=bearer(keys.writer)
        )
        assert "RULE_FRAUD_YOUNG_LARGE_AMOUNT" not in {r["code"] for r in small.json()["reasons"]}
        answer = large.json()
        assert answer["decision"] == "review"
        assert answer["reasons"][0]["code"] == "RULE_FRAUD_YOUNG_LARGE_AMOUNT"
        assert float(answer["proposed_limit"]) < 80000

    async def test_every_decline_has_an_adverse_reason(
        self, api: httpx.AsyncClient, keys: Keys
    ) -> None:
        for siren in (COLLECTIVE, CLOSED, CASH_STRAPPED):
            answer = (
                await api.post("/v1/score", json=body(siren), headers=bearer(keys.writer))
            ).json()
            if answer["decision"] == "decline":
                assert any(r["direction"] == "adverse" for r in answer["reasons"])

    @pytest.mark.parametrize("product", ["term_loan", "credit_line", "invoice_financing", "bnpl"])
    async def test_every_product_gets_a_limit_within_the_request(
        self, api: httpx.AsyncClient, keys: Keys, product: str
    ) -> None:
        response = await api.post(
            "/v1/score", json=body(HEALTHY, "5000.00", product), headers=bearer(keys.writer)
        )
        answer = response.json()
        assert response.status_code == 200, response.text
        assert answer["product"] == product
        assert 0 <= float(answer["proposed_limit"]) <= 5000


class TestProviderFaults:
    @pytest.mark.parametrize(
        ("siren", "source", "status"),
        [
            (BANK_TIMEOUT, "open_banking", "timeout"),
            (REGISTRY_ERROR, "registry", "error"),
            (ACCOUNTING_MALFORMED, "accounting", "error"),
            (BANK_TRUNCATED, "open_banking", "error"),
            (NO_BANK_CONSENT, "open_banking", "unavailable"),
            (THIN_FILE, "accounting", "unavailable"),
        ],
    )
    async def test_fault_degrades_the_answer_inside_the_budget(
        self, api: httpx.AsyncClient, keys: Keys, siren: str, source: str, status: str
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await api.post("/v1/score", json=body(siren), headers=bearer(keys.writer))
        elapsed_ms = (loop.time() - started) * 1000
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["sources"][source]["status"] == status
        assert answer["degraded"] is True
        assert answer["latency_ms"] < 500
        assert elapsed_ms < 600
        if source == "open_banking":
            # The policy does not approve blind: no bank data means a human looks.
            assert answer["decision"] in {"review", "decline"}


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"siren": "111111119", "requested_amount": "100.00", "product": "bnpl"}, "siren"),
    ({"siren": "1111111", "requested_amount": "100.00", "product": "bnpl"}, "siren"),
    ({"siren": "1" * 5000, "requested_amount": "100.00", "product": "bnpl"}, "siren"),
    ({"siren": 111111118, "requested_amount": "100.00", "product": "bnpl"}, "siren"),
    ({"siren": HEALTHY, "requested_amount": "-5.00", "product": "bnpl"}, "requested_amount"),
    ({"siren": HEALTHY, "requested_amount": "0", "product": "bnpl"}, "requested_amount"),
    ({"siren": HEALTHY, "requested_amount": "1e12", "product": "bnpl"}, "requested_amount"),
    (
        {"siren": HEALTHY, "requested_amount": "99999999999.00", "product": "bnpl"},
        "requested_amount",
    ),
    ({"siren": HEALTHY, "requested_amount": 100.5, "product": "bnpl"}, "requested_amount"),
    ({"siren": HEALTHY, "requested_amount": "10.123", "product": "bnpl"}, "requested_amount"),
    ({"siren": HEALTHY, "requested_amount": "NaN", "product": "bnpl"}, "requested_amount"),
    ({"siren": HEALTHY, "requested_amount": "100.00", "product": "mortgage"}, "product"),
    ({"siren": HEALTHY, "requested_amount": "100.00"}, "product"),
    ({"requested_amount": "100.00", "product": "bnpl"}, "siren"),
    ({"siren": HEALTHY, "requested_amount": "100.00", "product": "bnpl", "admin": True}, "admin"),
    (
        {"siren": HEALTHY, "requested_amount": "100.00", "product": "bnpl", "currency": "USD"},
        "currency",
    ),
]


class TestScoreBadInput:
    @pytest.mark.parametrize(("payload", "field"), BAD_BODIES)
    async def test_bad_body_names_the_field_and_writes_nothing(
        self,
        api: httpx.AsyncClient,
        keys: Keys,
        pg_engine: AsyncEngine,
        payload: dict[str, Any],
        field: str,
    ) -> None:
        before = await count_decisions(pg_engine)
        response = await api.post("/v1/score", json=payload, headers=bearer(keys.writer))
        problem = assert_problem(response, 422, "validation_error")
        assert field in {e["field"] for e in problem["errors"]}
        assert await count_decisions(pg_engine) == before

    async def test_spaces_in_siren_are_tolerated(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post(
            "/v1/score", json=body("111 111 118"), headers=bearer(keys.writer)
        )
        assert response.status_code == 200, response.text
        assert response.json()["siren"] == HEALTHY

    async def test_wrong_content_type_is_415(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post(
            "/v1/score",
            content=b"siren=111111118",
            headers={**bearer(keys.writer), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_problem(response, 415, "unsupported_media_type")

    async def test_body_too_large_is_413(self, api: httpx.AsyncClient, keys: Keys) -> None:
        payload = {**body(), "external_reference": "x" * 100_000}
        response = await api.post("/v1/score", json=payload, headers=bearer(keys.writer))
        assert_problem(response, 413, "payload_too_large")

    async def test_invalid_json_is_422(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post(
            "/v1/score",
            content=b'{"siren": "111111118",',
            headers={**bearer(keys.writer), "Content-Type": "application/json"},
        )
        assert_problem(response, 422, "validation_error")

    async def test_json_array_body_is_422(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post("/v1/score", json=[body()], headers=bearer(keys.writer))
        assert_problem(response, 422, "validation_error")


class TestIdempotency:
    async def test_retry_returns_the_same_decision_and_writes_once(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        headers = {**bearer(keys.writer), "Idempotency-Key": str(uuid.uuid4())}
        before = await count_decisions(pg_engine)
        first, second = await asyncio.gather(
            api.post("/v1/score", json=body(), headers=headers),
            api.post("/v1/score", json=body(), headers=headers),
        )
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        assert first.json()["decision_id"] == second.json()["decision_id"]
        third = await api.post("/v1/score", json=body(), headers=headers)
        # The same decision, word for word; only the answer's own latency differs.
        assert {**third.json(), "latency_ms": 0} == {**first.json(), "latency_ms": 0}
        assert await count_decisions(pg_engine) == before + 1

    async def test_retry_after_the_cache_forgot_the_key_still_replays(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine, redis_url: str
    ) -> None:
        key = str(uuid.uuid4())
        headers = {**bearer(keys.writer), "Idempotency-Key": key}
        first = await api.post("/v1/score", json=body(), headers=headers)
        assert first.status_code == 200, first.text
        before = await count_decisions(pg_engine)
        # As after the cache's 24 hours: only the audit store still knows the key.
        client = redis.Redis.from_url(redis_url)
        forgotten = [k for k in client.scan_iter(match=f"idem:*:{key}")]
        assert forgotten
        client.delete(*forgotten)
        client.close()
        for _ in range(2):
            retry = await api.post("/v1/score", json=body(), headers=headers)
            assert retry.status_code == 200, retry.text
            assert retry.json()["decision_id"] == first.json()["decision_id"]
        other = await api.post("/v1/score", json=body(amount="1.00"), headers=headers)
        assert_problem(other, 409, "idempotency_key_reused")
        assert await count_decisions(pg_engine) == before

    async def test_same_key_different_body_is_409(self, api: httpx.AsyncClient, keys: Keys) -> None:
        headers = {**bearer(keys.writer), "Idempotency-Key": str(uuid.uuid4())}
        assert (await api.post("/v1/score", json=body(), headers=headers)).status_code == 200
        response = await api.post("/v1/score", json=body(amount="999.00"), headers=headers)
        assert_problem(response, 409, "idempotency_key_reused")


class TestDecisionRead:
    async def test_own_decision_is_returned(self, api: httpx.AsyncClient, keys: Keys) -> None:
        answer = (await api.post("/v1/score", json=body(), headers=bearer(keys.writer))).json()
        response = await api.get(
            f"/v1/decisions/{answer['decision_id']}", headers=bearer(keys.writer)
        )
        assert response.status_code == 200, response.text
        stored = response.json()
        assert stored["decision"] == answer["decision"]
        assert stored["score"] == answer["score"]

    async def test_other_tenants_decision_is_404(self, api: httpx.AsyncClient, keys: Keys) -> None:
        answer = (await api.post("/v1/score", json=body(), headers=bearer(keys.writer))).json()
        response = await api.get(
            f"/v1/decisions/{answer['decision_id']}", headers=bearer(keys.other_tenant)
        )
        assert_problem(response, 404, "decision_not_found")

    async def test_unknown_decision_is_404(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.get(f"/v1/decisions/{uuid.uuid4()}", headers=bearer(keys.writer))
        assert_problem(response, 404, "decision_not_found")

    async def test_missing_key_is_401(self, api: httpx.AsyncClient) -> None:
        response = await api.get(f"/v1/decisions/{uuid.uuid4()}")
        assert_problem(response, 401, "unauthorized")


class TestOperations:
    async def test_health_ready_metrics(self, api: httpx.AsyncClient, keys: Keys) -> None:
        assert (await api.get("/healthz")).status_code == 200
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        await api.post("/v1/score", json=body(), headers=bearer(keys.writer))
        metrics = (await api.get("/metrics")).text
        assert "b2bscore_http_request_duration_seconds_bucket" in metrics
        assert 'b2bscore_source_status_total{source="open_banking"' in metrics
        assert "b2bscore_decisions_total" in metrics
        assert "b2bscore_score_bucket" in metrics

    async def test_openapi_is_served(self, api: httpx.AsyncClient) -> None:
        schema = (await api.get("/openapi.json")).json()
        assert "/v1/score" in schema["paths"]
