"""Limits as documented: per tenant and mode, and per client address without a valid key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from b2bscore.kit.db import create_sessionmaker
from b2bscore.tenants import service as tenants
from b2bscore.tenants.auth import principal_cache
from tests.security.conftest import (
    Stack,
    allow_partial_data,
    assert_problem_json,
    bearer,
    score_body,
    start_stack,
)

LIMIT = 3


async def _fresh_window() -> None:
    # Fixed one-minute windows: do not let a burst straddle a boundary.
    if time.time() % 60 > 50:
        await asyncio.sleep(60 - time.time() % 60 + 0.1)


@pytest.fixture
async def limited(
    postgres_admin_dsn: str, redis_url: str, sandbox_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A stack whose requests without a valid key are limited to LIMIT a minute."""
    async with start_stack(
        postgres_admin_dsn,
        redis_url,
        sandbox_url,
        tmp_path,
        "limits",
        unauthenticated_rate_limit_per_minute=LIMIT,
    ) as stack:
        yield stack


def _from(stack: Stack, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=stack.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


async def test_requests_without_a_valid_key_are_limited_per_address(limited: Stack) -> None:
    await _fresh_window()
    async with _from(limited, "203.0.113.7") as attacker, _from(limited, "198.51.100.9") as lender:
        bad = bearer("sk_test_" + "x" * 43)
        answers = [
            await attacker.post("/v1/score", json=score_body(), headers=bad),
            await attacker.get("/v1/decisions"),  # no key at all counts too
            await attacker.get("/v1/decisions/some-id", headers=bearer("garbage")),
        ]
        assert [a.status_code for a in answers] == [401] * LIMIT
        refused = await attacker.post("/v1/score", json=score_body(), headers=bad)
        assert refused.status_code == 429
        assert assert_problem_json(refused)["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Past the allowance, a key not yet known to this process is refused before the
        # database is asked (the address is flooding); the health check stays open.
        principal_cache.clear()
        assert (
            await attacker.get("/v1/decisions", headers=bearer(limited.keys.writer))
        ).status_code == 429
        assert (await attacker.get("/healthz")).status_code == 200
        # Another address is not affected, with or without a valid key.
        assert (await lender.get("/v1/decisions", headers=bad)).status_code == 401
        assert (
            await lender.get("/v1/decisions", headers=bearer(limited.keys.writer))
        ).status_code == 200


async def test_the_limit_is_per_tenant_and_mode_across_its_keys(limited: Stack) -> None:
    keys = limited.keys
    async with create_sessionmaker(limited.engine)() as session:
        await tenants.set_rate_limit(session, keys.tenant_a, LIMIT)
        tenant = await tenants.create_tenant(session, keys.tenant_a_name)
        _, second_writer = await tenants.create_api_key(
            session, tenant, "test", ["score:write", "decisions:read"]
        )
        await session.commit()
    await allow_partial_data(limited.engine, keys.tenant_a, True)
    await _fresh_window()
    # An address of its own: other tests' 401s from the default address share Redis.
    client = _from(limited, "192.0.2.44")
    test_keys = [keys.writer, second_writer, keys.reader_only]
    statuses = [
        (await client.get("/v1/decisions", headers=bearer(key))).status_code for key in test_keys
    ]
    assert statuses == [200] * LIMIT
    # Every key of the tenant in test mode shares the allowance: the fourth is refused,
    # whichever key sends it.
    refused = await client.post("/v1/score", json=score_body(), headers=bearer(second_writer))
    assert refused.status_code == 429
    assert "tenant" in assert_problem_json(refused)["detail"]
    # Live traffic has an allowance of its own, and so has another tenant.
    live = await client.post("/v1/score", json=score_body(), headers=bearer(keys.live))
    assert live.status_code == 200, live.text
    other = await client.get("/v1/decisions", headers=bearer(keys.other_tenant))
    assert other.status_code == 200
    await client.aclose()
