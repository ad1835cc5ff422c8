"""Two workers without Redis: retries of one request, spread over both, get one decision.

Each worker has its own in-process cache, so only the audit store knows that a key was
used: a retry landing on the other worker must be answered with the committed decision
(200, the same decision id), never a 409 nor a second decision.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from b2bscore.decisions.models import Decision
from b2bscore.kit.db import create_engine, upgrade_database
from b2bscore.kit.settings import Settings
from tests.security.conftest import (
    MODELS_DIR,
    app_instance,
    bearer,
    create_keys,
    fresh_database,
    score_body,
)

ROUNDS = 8
RETRIES = 6


@pytest.fixture(params=["postgres", "sqlite"])
async def database_url(
    request: pytest.FixtureRequest, postgres_admin_dsn: str, tmp_path: Path
) -> AsyncIterator[str]:
    """A fresh migrated database of either kind."""
    if request.param == "postgres":
        async with fresh_database(postgres_admin_dsn, "twoworkers") as (_, url):
            yield url
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'b2bscore.db'}"
    await asyncio.to_thread(upgrade_database, url)
    yield url


async def test_retries_across_two_workers_without_redis_get_the_one_decision(
    database_url: str, sandbox_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        sandbox_url=sandbox_url,  # no redis_url: each worker counts and claims alone
        var_dir=tmp_path,
        models_dir=MODELS_DIR,
        rate_limit_per_minute=100_000,
    )
    engine = create_engine(database_url, pool_size=2)
    try:
        keys = await create_keys(engine)
        async with app_instance(settings) as (_, first), app_instance(settings) as (_, second):
            workers: list[httpx.AsyncClient] = [first, second]
            for worker in workers:  # warm: pools open, principal and sources cached
                warm = await worker.post(
                    "/v1/score", json=score_body(), headers=bearer(keys.writer)
                )
                assert warm.status_code == 200, warm.text
            statuses: Counter[int] = Counter()
            for _ in range(ROUNDS):
                headers = bearer(keys.writer, **{"Idempotency-Key": str(uuid.uuid4())})
                answers = await asyncio.gather(
                    *(
                        workers[i % 2].post("/v1/score", json=score_body(), headers=headers)
                        for i in range(RETRIES)
                    )
                )
                statuses.update(a.status_code for a in answers)
                ids = {a.json()["decision_id"] for a in answers if a.status_code == 200}
                assert len(ids) <= 1, ids
            assert statuses[409] == 0, statuses
            assert set(statuses) <= {200, 503}, statuses
            assert statuses[200] >= ROUNDS * RETRIES // 2, statuses
        async with engine.connect() as connection:
            per_key = (
                (
                    await connection.execute(
                        select(func.count())
                        .select_from(Decision)
                        .where(Decision.idempotency_key.is_not(None))
                        .group_by(Decision.idempotency_key)
                    )
                )
                .scalars()
                .all()
            )
        assert per_key == [1] * ROUNDS
    finally:
        await engine.dispose()
