"""Admission: a few decisions at a time, the others wait before their budget starts.

The API in process on real PostgreSQL and Redis, a sandbox over real HTTP whose registry
answers in a fixed 150 ms, and concurrent requests through the ASGI transport.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import build_state, close_state, create_app
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.settings import Settings
from b2bscore.sandbox.app import create_sandbox_app
from b2bscore.sandbox.profile import SandboxProfile
from b2bscore.tenants import service as tenants
from b2bscore.training.world import sample_sirens
from tests.scoring.conftest import count_decisions
from tests.servers import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
SLOW_REGISTRY_S = 0.15


@pytest.fixture(scope="module")
def slow_sandbox() -> Iterator[str]:
    """A sandbox whose registry always answers in 150 ms, the other providers at once."""
    profile = SandboxProfile.model_validate(
        {"name": "slow-registry", "sirene": {"median_ms": 150, "p99_ms": 150}}
    )
    with serve_in_thread(create_sandbox_app(profile)) as url:
        yield url


@pytest.fixture(scope="module")
async def key(pg_engine: AsyncEngine) -> str:
    """A test key of a tenant of its own."""
    async with create_sessionmaker(pg_engine)() as session:
        tenant = await tenants.create_tenant(session, f"admission-{os.urandom(3).hex()}")
        _, key = await tenants.create_api_key(session, tenant, "test", ["score:write"])
        await session.commit()
    return key


async def _api(
    settings: Settings,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    app.state.b2b = await build_state(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client
    finally:
        await close_state(app.state.b2b)


def _settings(
    postgres_url: str, redis_url: str, sandbox_url: str, var: Path, **extra: object
) -> Settings:
    return Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        sandbox_url=sandbox_url,
        var_dir=var,
        models_dir=Path(os.environ.get("B2BSCORE_TEST_MODELS_DIR", REPO / "models")),
        rate_limit_per_minute=100_000,
        **extra,  # type: ignore[arg-type]
    )


def _body(siren: str) -> dict[str, str]:
    return {"siren": siren, "requested_amount": "15000.00", "product": "credit_line"}


def _waited_ms(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]
    assert timing.startswith("admission;dur=")
    return float(timing.split("=", 1)[1])


def test_limits_default_to_the_embedded_default_only(tmp_path: Path) -> None:
    embedded = Settings(var_dir=tmp_path)
    assert embedded.is_embedded
    assert embedded.resolved_max_concurrent_decisions == 4
    served = Settings(var_dir=tmp_path, database_url="postgresql+asyncpg://u@h/db")
    assert served.resolved_max_concurrent_decisions == 0
    assert (
        Settings(var_dir=tmp_path, max_concurrent_decisions=0).resolved_max_concurrent_decisions
        == 0
    )


async def test_queued_decisions_wait_before_their_budget_starts(
    postgres_url: str,
    redis_url: str,
    slow_sandbox: str,
    key: str,
    pg_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    settings = _settings(
        postgres_url, redis_url, slow_sandbox, tmp_path, max_concurrent_decisions=1
    )
    warm, *sirens = sample_sirens(4, 8_181)
    async for api in _api(settings):
        headers = {"Authorization": f"Bearer {key}"}
        # The first decision of a process opens its pools and connections: not measured.
        assert (await api.post("/v1/score", json=_body(warm), headers=headers)).is_success
        rows_before = await count_decisions(pg_engine)
        responses = await asyncio.gather(
            *(api.post("/v1/score", json=_body(s), headers=headers) for s in sirens)
        )
        assert [r.status_code for r in responses] == [200, 200, 200]
        waits = sorted(_waited_ms(r) for r in responses)
        # One at a time: the second waited for the first's registry, the third for both.
        assert waits[0] < SLOW_REGISTRY_S * 1000
        assert waits[1] >= SLOW_REGISTRY_S * 1000 * 0.9
        assert waits[2] >= 2 * SLOW_REGISTRY_S * 1000 * 0.9
        for response in responses:
            answer = response.json()
            # The wait is not the decision's budget: no source was cut for it.
            assert answer["sources"]["registry"]["status"] == "ok", (answer["sources"], waits)
            assert answer["latency_ms"] < settings.deadline_ms
        # Other paths never wait.
        health = await api.get("/healthz")
        assert "server-timing" not in health.headers
    assert await count_decisions(pg_engine) == rows_before + 3


async def test_no_turn_within_the_wait_is_a_503_with_nothing_written(
    postgres_url: str,
    redis_url: str,
    slow_sandbox: str,
    key: str,
    pg_engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    settings = _settings(
        postgres_url,
        redis_url,
        slow_sandbox,
        tmp_path,
        max_concurrent_decisions=1,
        admission_wait_ms=30,
    )
    sirens = sample_sirens(2, 9_191)
    rows_before = await count_decisions(pg_engine)
    async for api in _api(settings):
        headers = {"Authorization": f"Bearer {key}"}
        responses = await asyncio.gather(
            *(api.post("/v1/score", json=_body(s), headers=headers) for s in sirens)
        )
        assert sorted(r.status_code for r in responses) == [200, 503]
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "overloaded"
        # The slot is given back: the next request is decided.
        again = await api.post("/v1/score", json=_body(sirens[0]), headers=headers)
        assert again.status_code == 200
    assert await count_decisions(pg_engine) == rows_before + 2
