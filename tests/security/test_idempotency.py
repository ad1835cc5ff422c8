"""Idempotency under racing retries, through the real API and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from b2bscore.decisions.models import Decision
from tests.security.conftest import Stack, assert_problem_json, bearer, score_body

RETRIES = 10


async def _rows_with_key(stack: Stack, key: str) -> int:
    async with stack.engine.connect() as connection:
        statement = select(func.count()).where(Decision.idempotency_key == key)
        return int((await connection.execute(statement)).scalar_one())


async def test_racing_retries_get_one_decision_and_one_row(stack: Stack) -> None:
    key = str(uuid.uuid4())
    headers = bearer(stack.keys.writer, **{"Idempotency-Key": key})
    responses = await asyncio.gather(
        *(
            stack.client.post("/v1/score", json=score_body(), headers=headers)
            for _ in range(RETRIES)
        )
    )
    assert [r.status_code for r in responses] == [200] * RETRIES, [r.text for r in responses]
    assert len({r.json()["decision_id"] for r in responses}) == 1
    assert await _rows_with_key(stack, key) == 1


async def test_same_key_with_another_body_is_409(stack: Stack) -> None:
    key = str(uuid.uuid4())
    headers = bearer(stack.keys.writer, **{"Idempotency-Key": key})
    first = await stack.client.post("/v1/score", json=score_body(), headers=headers)
    assert first.status_code == 200, first.text
    other = await stack.client.post("/v1/score", json=score_body(amount="999.00"), headers=headers)
    assert other.status_code == 409
    assert assert_problem_json(other)["code"] == "idempotency_key_reused"
    assert await _rows_with_key(stack, key) == 1


async def test_racing_different_bodies_under_one_key_write_one_row(stack: Stack) -> None:
    key = str(uuid.uuid4())
    headers = bearer(stack.keys.writer, **{"Idempotency-Key": key})
    amounts = [f"{1000 + i}.00" for i in range(RETRIES)]
    responses = await asyncio.gather(
        *(
            stack.client.post("/v1/score", json=score_body(amount=a), headers=headers)
            for a in amounts
        )
    )
    statuses = sorted(r.status_code for r in responses)
    # Exactly one request wins the key; every other is told the key is taken.
    assert statuses.count(200) == 1, [r.text for r in responses]
    assert all(s == 409 for s in statuses if s != 200)
    assert await _rows_with_key(stack, key) == 1


async def test_keys_are_per_tenant(stack: Stack) -> None:
    key = str(uuid.uuid4())
    mine = await stack.client.post(
        "/v1/score",
        json=score_body(),
        headers=bearer(stack.keys.writer, **{"Idempotency-Key": key}),
    )
    theirs = await stack.client.post(
        "/v1/score",
        json=score_body(),
        headers=bearer(stack.keys.other_tenant, **{"Idempotency-Key": key}),
    )
    assert mine.status_code == theirs.status_code == 200
    # Another tenant's key never returns (or blocks on) my decision.
    assert mine.json()["decision_id"] != theirs.json()["decision_id"]
    assert await _rows_with_key(stack, key) == 2
