"""POST /score: the current version's endpoint (v1) under the path lenders were given."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import create_app
from tests.scoring.conftest import Keys, bearer, count_decisions
from tests.scoring.test_endpoints import assert_problem, body


class TestCurrentScorePath:
    async def test_missing_key_is_401(self, api: httpx.AsyncClient) -> None:
        assert_problem(await api.post("/score", json=body()), 401, "unauthorized")

    async def test_key_without_score_scope_is_403(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post("/score", json=body(), headers=bearer(keys.reader_only))
        assert_problem(response, 403, "insufficient_scope")

    async def test_invalid_siren_names_the_field(self, api: httpx.AsyncClient, keys: Keys) -> None:
        response = await api.post(
            "/score", json=body(siren="123456789"), headers=bearer(keys.writer)
        )
        problem = assert_problem(response, 422, "validation_error")
        assert "siren" in {error["field"].split(".")[-1] for error in problem["errors"]}

    async def test_answers_as_v1_and_is_the_same_decision(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        # One Idempotency-Key across both paths: the second call replays the first
        # decision, which only the same handler, store and idempotency scope can do.
        headers = {**bearer(keys.writer), "Idempotency-Key": str(uuid.uuid4())}
        before = await count_decisions(pg_engine)
        current = await api.post("/score", json=body(), headers=headers)
        assert current.status_code == 200, current.text
        versioned = await api.post("/v1/score", json=body(), headers=headers)
        assert versioned.status_code == 200, versioned.text
        assert {**current.json(), "latency_ms": 0} == {**versioned.json(), "latency_ms": 0}
        assert await count_decisions(pg_engine) == before + 1
        assert current.json()["decision"] in {"approve", "review", "decline"}


def test_openapi_documents_both_paths_with_one_contract() -> None:
    app: FastAPI = create_app()
    paths = app.openapi()["paths"]
    current, versioned = paths["/score"]["post"], paths["/v1/score"]["post"]
    assert current["requestBody"] == versioned["requestBody"]
    assert current["responses"] == versioned["responses"]
    assert current["parameters"] == versioned["parameters"]
    assert "POST /v1/score" in current["summary"]
    assert current["operationId"] != versioned["operationId"]
