"""No decision without a record: the audit database disappears in the middle of a burst.

A real API on its own PostgreSQL database takes a burst of concurrent score requests
while an admin connection kicks every session out and refuses new ones, then lets them
back. Every 200 must have exactly one audit row; everything else must be a clean
problem+json (503 audit_unavailable above all), and the chains must still verify.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from b2bscore.decisions.chain import verify_chain
from b2bscore.decisions.models import Decision
from b2bscore.kit.db import create_sessionmaker
from tests.security.conftest import (
    Stack,
    admin_execute,
    assert_problem_json,
    bearer,
    score_body,
    start_stack,
)

REQUESTS = 60
SPACING_S = 0.02  # the burst lasts about 1.2 s
OUTAGE_AFTER_S = 0.35
OUTAGE_FOR_S = 0.6


@pytest.fixture
async def outage_stack(
    postgres_admin_dsn: str, redis_url: str, sandbox_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A stack on a database of its own: cutting it off disturbs no other test."""
    async with start_stack(postgres_admin_dsn, redis_url, sandbox_url, tmp_path, "outage") as s:
        yield s


async def _cut_off(stack: Stack) -> None:
    db = stack.db_name
    await admin_execute(stack.admin_dsn, f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
    await admin_execute(
        stack.admin_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        db,
    )


async def _restore(stack: Stack) -> None:
    await admin_execute(stack.admin_dsn, f'ALTER DATABASE "{stack.db_name}" ALLOW_CONNECTIONS true')


async def test_every_answered_decision_is_recorded_exactly_once(
    outage_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = outage_stack
    caplog.set_level(logging.WARNING)
    # Warm up: principal cached, pools and source cache filled, so the burst is about the
    # database and nothing else.
    warm = await stack.client.post(
        "/v1/score", json=score_body(), headers=bearer(stack.keys.writer)
    )
    assert warm.status_code == 200, warm.text

    async def one(i: int) -> httpx.Response:
        await asyncio.sleep(i * SPACING_S)
        headers = bearer(stack.keys.writer)
        if i % 2:
            # Half with an idempotency key: that path reads the database before scoring.
            headers["Idempotency-Key"] = str(uuid.uuid4())
        return await stack.client.post("/v1/score", json=score_body(), headers=headers)

    async def outage() -> None:
        await asyncio.sleep(OUTAGE_AFTER_S)
        await _cut_off(stack)
        try:
            await asyncio.sleep(OUTAGE_FOR_S)
        finally:
            await _restore(stack)

    cut = asyncio.create_task(outage())
    responses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    await cut

    outcomes = Counter(
        "200" if r.status_code == 200 else f"{r.status_code} {assert_problem_json(r)['code']}"
        for r in responses
    )
    # A 500 means some path let a database error through unmapped: name its cause.
    causes = Counter(
        f"{r.name}: {r.getMessage()[:120]}" for r in caplog.records if r.levelno >= logging.WARNING
    )
    print(f"\noutcomes: {dict(outcomes)}\nlogged: {dict(causes)}")
    for response in responses:
        if response.status_code != 200:
            assert response.status_code == 503, (response.status_code, response.text, causes)
            assert int(response.headers["retry-after"]) >= 1

    # The outage really bit, and the service really answered around it.
    assert outcomes["200"] > 0
    assert outcomes["503 audit_unavailable"] > 0

    answered = [r.json()["decision_id"] for r in responses if r.status_code == 200]
    assert len(set(answered)) == len(answered)
    async with create_sessionmaker(stack.engine)() as session:
        counts = dict(
            (
                await session.execute(
                    select(Decision.id, func.count())
                    .where(Decision.id.in_(answered))
                    .group_by(Decision.id)
                )
            ).all()
        )
        assert {d: counts.get(d, 0) for d in answered} == dict.fromkeys(answered, 1)
        verified = await verify_chain(session, chain_keys=stack.state.chain_keys)
        assert verified.ok, verified.broken

    # And once the database is back, decisions flow again.
    after = await stack.client.post(
        "/v1/score", json=score_body(), headers=bearer(stack.keys.writer)
    )
    assert after.status_code == 200, after.text
