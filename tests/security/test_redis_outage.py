"""Redis going down mid-service: scoring goes on, limits hold per process, /readyz says so.

A real redis-server is started for this module and killed halfway: what the service
meets is a Redis that stops answering, exactly as in production.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from b2bscore.kit.db import create_sessionmaker
from b2bscore.tenants.models import Tenant
from tests.security.conftest import bearer, score_body, start_stack
from tests.servers import own_redis_server

LIMIT = 3


@pytest.fixture
def doomed_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, which the test may kill."""
    with own_redis_server(tmp_path) as server:
        yield server


async def test_scoring_survives_redis_going_down(
    postgres_admin_dsn: str,
    sandbox_url: str,
    tmp_path: Path,
    doomed_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = doomed_redis
    async with start_stack(postgres_admin_dsn, url, sandbox_url, tmp_path, "redisdown") as stack:
        async with create_sessionmaker(stack.engine)() as session:
            await session.execute(
                update(Tenant)
                .where(Tenant.id == stack.keys.tenant_a)
                .values(rate_limit_per_minute=LIMIT)
            )
            await session.commit()
        headers = bearer(stack.keys.writer)
        before = await stack.client.post("/v1/score", json=score_body(), headers=headers)
        assert before.status_code == 200, before.text
        assert (await stack.client.get("/readyz")).json()["checks"]["cache"] == "ok"

        process.kill()
        process.wait()

        statuses = [
            (await stack.client.post("/v1/score", json=score_body(), headers=headers)).status_code
            for _ in range(LIMIT + 1)
        ]
        # The first went through with Redis; in-process counting takes over from zero, so
        # the limit holds again within this process.
        assert statuses[:LIMIT] == [200] * LIMIT
        assert statuses[LIMIT] == 429
        ready = await stack.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["cache"].startswith("degraded")
