"""Rate limits and revocations hold across two API instances sharing Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from b2bscore.kit.db import create_sessionmaker
from b2bscore.tenants import service as tenants
from b2bscore.tenants.auth import principal_cache
from b2bscore.tenants.keys import hash_key
from tests.security.conftest import Stack, app_instance, assert_problem_json, bearer, score_body
from tests.security.test_audit_cli import run_cli

LIMIT = 5


@pytest.fixture
async def twin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A second API instance (own pools, own Redis client) on the stack's settings."""
    async with app_instance(stack.settings) as (_, client):
        yield client


def _cli_env(stack: Stack) -> dict[str, str]:
    return {
        "B2BSCORE_DATABASE_URL": stack.url,
        "B2BSCORE_REDIS_URL": stack.settings.redis_url or "",
        "B2BSCORE_VAR_DIR": str(stack.settings.var_dir),
    }


async def _wait_for_a_fresh_window() -> None:
    # Fixed one-minute windows: do not let the burst straddle a boundary.
    if time.time() % 60 > 50:
        await asyncio.sleep(60 - time.time() % 60 + 0.1)


async def test_a_tenant_limit_holds_across_two_instances(
    stack: Stack, twin: httpx.AsyncClient
) -> None:
    tenant = f"limited-{os.getpid()}-{time.monotonic_ns()}"
    created = await run_cli(["keys", "create", "--tenant", tenant], _cli_env(stack))
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_test_")
    limited = await run_cli(
        ["keys", "set-rate-limit", "--tenant", tenant, "--per-minute", str(LIMIT)],
        _cli_env(stack),
    )
    assert limited.exit_code == 0, limited.output

    await _wait_for_a_fresh_window()
    clients = [stack.client, twin]
    answers = [
        await clients[i % 2].post("/v1/score", json=score_body(), headers=bearer(key))
        for i in range(LIMIT - 1)
    ]
    assert [a.status_code for a in answers] == [200] * (LIMIT - 1), answers[-1].text
    # The limit is counted before the body is read: a refused body uses up a request too.
    invalid = await twin.post("/v1/score", json={"siren": "123"}, headers=bearer(key))
    assert invalid.status_code == 422
    refused = await stack.client.post("/v1/score", json=score_body(), headers=bearer(key))
    assert refused.status_code == 429
    assert assert_problem_json(refused)["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # The other instance refuses too: the count is shared, not per process.
    again = await twin.post("/v1/score", json=score_body(), headers=bearer(key))
    assert again.status_code == 429
    # Past the limit a bad body is not even read: 429, not 422.
    invalid = await twin.post("/v1/score", json={"siren": "123"}, headers=bearer(key))
    assert invalid.status_code == 429
    # Reads of the audit store count against the same limit.
    assert (await twin.get("/v1/decisions", headers=bearer(key))).status_code == 429


async def test_set_rate_limit_refuses_nonsense(stack: Stack) -> None:
    result = await run_cli(
        ["keys", "set-rate-limit", "--tenant", stack.keys.tenant_a_name, "--per-minute", "0"],
        _cli_env(stack),
    )
    assert result.exit_code != 0
    result = await run_cli(
        ["keys", "set-rate-limit", "--tenant", "no-such-tenant", "--per-minute", "5"],
        _cli_env(stack),
    )
    assert result.exit_code == 1


async def _new_key(stack: Stack) -> tuple[str, str]:
    async with create_sessionmaker(stack.engine)() as session:
        tenant = await tenants.create_tenant(session, stack.keys.tenant_a_name)
        api_key, key = await tenants.create_api_key(session, tenant, "test", ["decisions:read"])
        await session.commit()
        return api_key.id, key


async def test_a_key_revoked_by_another_process_is_refused_at_once_by_both(
    stack: Stack, twin: httpx.AsyncClient
) -> None:
    key_id, key = await _new_key(stack)
    for client in (stack.client, twin):
        assert (await client.get("/v1/decisions", headers=bearer(key))).status_code == 200
    # The CLI, a separate process, revokes: nothing in this process is told directly.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "b2bscore",
        "keys",
        "revoke",
        key_id,
        env={**os.environ, **_cli_env(stack)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (out, err)
    assert b"revoked key" in out
    # Still cached here: only the shared revocation marker can refuse it now.
    assert principal_cache.get(hash_key(key)) is not None
    for client in (stack.client, twin):
        response = await client.get("/v1/decisions", headers=bearer(key))
        assert response.status_code == 401, response.text
        assert assert_problem_json(response)["code"] == "unauthorized"


async def test_a_key_revoked_through_the_service_is_refused_at_once_by_both(
    stack: Stack, twin: httpx.AsyncClient
) -> None:
    key_id, key = await _new_key(stack)
    for client in (stack.client, twin):
        assert (await client.get("/v1/decisions", headers=bearer(key))).status_code == 200
    async with create_sessionmaker(stack.engine)() as session:
        revoked = await tenants.revoke_api_key(session, key_id, cache=stack.state.cache)
        assert revoked is not None
        await session.commit()
    for client in (stack.client, twin):
        assert (await client.get("/v1/decisions", headers=bearer(key))).status_code == 401


async def test_keys_list_never_shows_a_key_or_its_hash(stack: Stack) -> None:
    key_id, key = await _new_key(stack)
    result = await run_cli(["keys", "list", "--tenant", stack.keys.tenant_a_name], _cli_env(stack))
    assert result.exit_code == 0, result.output
    assert key_id in result.output
    assert key[:12] in result.output
    assert key not in result.output
    assert hash_key(key) not in result.output
    assert stack.keys.writer not in result.output
    header = result.output.splitlines()[0].split()
    assert header == ["id", "prefix", "mode", "scopes", "created", "expires", "revoked"]
