"""Test and live are separate worlds: reads, lists, replays and idempotency keys.

Each test runs twice: on PostgreSQL with Redis, and on the embedded default (SQLite and
the in-process cache).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from b2bscore.decisions.models import Decision
from b2bscore.kit.db import create_engine, upgrade_database
from b2bscore.kit.settings import Settings
from b2bscore.tenants.auth import principal_cache
from tests.security.conftest import (
    MODELS_DIR,
    Stack,
    StackKeys,
    allow_partial_data,
    app_instance,
    assert_problem_json,
    bearer,
    create_keys,
    score_body,
    start_stack,
)


@pytest.fixture(params=["postgres+redis", "sqlite"], scope="module")
async def walled(
    request: pytest.FixtureRequest,
    postgres_admin_dsn: str,
    redis_url: str,
    sandbox_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """A stack whose tenant A may score live on partial data (no live provider here)."""
    var_dir = tmp_path_factory.mktemp("var")
    if request.param == "postgres+redis":
        async with start_stack(postgres_admin_dsn, redis_url, sandbox_url, var_dir, "modes") as s:
            await allow_partial_data(s.engine, s.keys.tenant_a, True)
            yield s
        return
    url = f"sqlite+aiosqlite:///{var_dir / 'b2bscore.db'}"
    await asyncio.to_thread(upgrade_database, url)
    settings = Settings(
        database_url=url,
        sandbox_url=sandbox_url,
        var_dir=var_dir,
        models_dir=MODELS_DIR,
        rate_limit_per_minute=100_000,
        unauthenticated_rate_limit_per_minute=100_000,
    )
    engine = create_engine(url)
    try:
        keys: StackKeys = await create_keys(engine)
        await allow_partial_data(engine, keys.tenant_a, True)
        async with app_instance(settings) as (app, client):
            yield Stack("", "", url, settings, app, app.state.b2b, client, engine, keys)
    finally:
        await engine.dispose()
        principal_cache.clear()


async def _score(stack: Stack, key: str, idempotency_key: str | None = None) -> dict[str, Any]:
    headers = bearer(key, **({"Idempotency-Key": idempotency_key} if idempotency_key else {}))
    response = await stack.client.post("/v1/score", json=score_body(), headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


class TestReadsStayInTheirMode:
    async def test_each_answer_says_its_mode(self, walled: Stack) -> None:
        assert (await _score(walled, walled.keys.writer))["mode"] == "test"
        live = await _score(walled, walled.keys.live)
        assert live["mode"] == "live"
        read = await walled.client.get(
            f"/v1/decisions/{live['decision_id']}", headers=bearer(walled.keys.live)
        )
        assert read.status_code == 200
        assert read.json()["mode"] == "live"

    @pytest.mark.parametrize("direction", ["test reads live", "live reads test"])
    async def test_another_modes_decision_is_404_to_read_and_replay(
        self, walled: Stack, direction: str
    ) -> None:
        writer, reader = (
            (walled.keys.live, walled.keys.writer)
            if direction == "test reads live"
            else (walled.keys.writer, walled.keys.live)
        )
        decision_id = (await _score(walled, writer))["decision_id"]
        # The control: the writing key itself reads and replays it.
        assert (
            await walled.client.get(f"/v1/decisions/{decision_id}", headers=bearer(writer))
        ).status_code == 200
        for response in (
            await walled.client.get(f"/v1/decisions/{decision_id}", headers=bearer(reader)),
            await walled.client.post(f"/v1/decisions/{decision_id}/replay", headers=bearer(reader)),
        ):
            assert response.status_code == 404, response.text
            assert assert_problem_json(response)["code"] == "decision_not_found"

    async def test_lists_hold_only_the_keys_own_mode(self, walled: Stack) -> None:
        test_id = (await _score(walled, walled.keys.writer))["decision_id"]
        live_id = (await _score(walled, walled.keys.live))["decision_id"]
        for key, own, foreign, mode in (
            (walled.keys.writer, test_id, live_id, "test"),
            (walled.keys.live, live_id, test_id, "live"),
        ):
            seen: set[str] = set()
            cursor: str | None = None
            while True:
                params: dict[str, str | int] = {"limit": 200}
                if cursor:
                    params["cursor"] = cursor
                page = await walled.client.get("/v1/decisions", params=params, headers=bearer(key))
                assert page.status_code == 200, page.text
                body = page.json()
                assert {item["mode"] for item in body["items"]} <= {mode}
                seen |= {item["decision_id"] for item in body["items"]}
                cursor = body["next_cursor"]
                if cursor is None:
                    break
            assert own in seen
            assert foreign not in seen


async def test_the_source_cache_is_per_tenant_and_mode(walled: Stack) -> None:
    body = score_body("333333334")

    async def statuses(key: str) -> set[str]:
        response = await walled.client.post("/v1/score", json=body, headers=bearer(key))
        assert response.status_code == 200, response.text
        return {s["status"] for s in response.json()["sources"].values()}

    assert "cached" not in await statuses(walled.keys.writer)
    assert "cached" in await statuses(walled.keys.writer)  # the control: it is cached
    # Another tenant asking for the same sandbox company: fetched for it, not cached.
    assert "cached" not in await statuses(walled.keys.other_tenant)


class TestIdempotencyPerMode:
    async def test_one_key_gives_one_decision_per_mode(self, walled: Stack) -> None:
        key = f"order-{uuid.uuid4()}"
        first_test = await _score(walled, walled.keys.writer, key)
        first_live = await _score(walled, walled.keys.live, key)
        # Not the sandbox decision replayed to the live key, nor the reverse.
        assert first_live["decision_id"] != first_test["decision_id"]
        assert (first_test["mode"], first_live["mode"]) == ("test", "live")
        # Each retry replays its own mode's decision.
        assert (await _score(walled, walled.keys.live, key))["decision_id"] == first_live[
            "decision_id"
        ]
        assert (await _score(walled, walled.keys.writer, key))["decision_id"] == first_test[
            "decision_id"
        ]
        async with walled.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(Decision.mode, func.count())
                    .where(Decision.idempotency_key == key)
                    .group_by(Decision.mode)
                )
            ).all()
        assert dict(rows) == {"test": 1, "live": 1}

    async def test_a_key_first_used_live_is_new_to_test(self, walled: Stack) -> None:
        key = f"order-{uuid.uuid4()}"
        live = await _score(walled, walled.keys.live, key)
        test = await _score(walled, walled.keys.writer, key)
        assert test["decision_id"] != live["decision_id"]
        assert test["mode"] == "test"
        # The sandbox answered the test key: real data, not the live key's empty sources.
        assert {s["status"] for s in test["sources"].values()} <= {"ok", "cached"}


class TestNoProviders:
    async def test_live_without_providers_is_503_unless_partial_data_is_allowed(
        self, walled: Stack
    ) -> None:
        await allow_partial_data(walled.engine, walled.keys.tenant_a, False)
        try:
            async with walled.engine.connect() as connection:
                before = (await connection.execute(select(func.count(Decision.id)))).scalar_one()
            refused = await walled.client.post(
                "/v1/score", json=score_body(), headers=bearer(walled.keys.live)
            )
            assert refused.status_code == 503
            problem = assert_problem_json(refused)
            assert problem["code"] == "providers_not_configured"
            assert "live" in problem["detail"]
            assert int(refused.headers["retry-after"]) >= 1
            async with walled.engine.connect() as connection:
                after = (await connection.execute(select(func.count(Decision.id)))).scalar_one()
            assert after == before
            # The test key of the same tenant still scores: the sandbox is configured.
            assert (await _score(walled, walled.keys.writer))["mode"] == "test"
        finally:
            await allow_partial_data(walled.engine, walled.keys.tenant_a, True)
        allowed = await _score(walled, walled.keys.live)
        assert {s["status"] for s in allowed["sources"].values()} == {"unavailable"}
        assert allowed["decision"] == "review"


async def test_set_partial_data_cli(walled: Stack, tmp_path: Path) -> None:
    from tests.security.test_audit_cli import run_cli

    env = {
        "B2BSCORE_DATABASE_URL": walled.url,
        "B2BSCORE_VAR_DIR": str(walled.settings.var_dir),
    }
    denied = await run_cli(
        ["keys", "set-partial-data", "--tenant", walled.keys.tenant_a_name, "--deny"], env
    )
    assert denied.exit_code == 0, denied.output
    principal_cache.clear()
    try:
        refused = await walled.client.post(
            "/v1/score", json=score_body(), headers=bearer(walled.keys.live)
        )
        assert refused.status_code == 503
    finally:
        allowed = await run_cli(
            ["keys", "set-partial-data", "--tenant", walled.keys.tenant_a_name, "--allow"], env
        )
        assert allowed.exit_code == 0, allowed.output
        principal_cache.clear()
    assert (await _score(walled, walled.keys.live))["mode"] == "live"
    unknown = await run_cli(["keys", "set-partial-data", "--tenant", "nobody", "--allow"], env)
    assert unknown.exit_code == 1
    assert "no tenant named" in unknown.output
