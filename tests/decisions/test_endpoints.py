"""GET /v1/decisions and /v1/decisions/{id} through a small app on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.endpoints import get_chain_keys, router
from b2bscore.decisions.models import Decision
from b2bscore.decisions.service import record_decision
from b2bscore.kit.deps import get_db_session, get_session_opener
from b2bscore.kit.problems import install_problem_handlers
from b2bscore.tenants.auth import principal_cache
from b2bscore.tenants.service import create_api_key
from tests.decisions.factories import make_record, new_tenant


@dataclass
class World:
    """Two tenants, their keys and decisions."""

    reader: str
    writer_only: str
    other_reader: str
    mine: list[Decision]
    theirs: Decision


@pytest.fixture
async def world(db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring) -> World:
    """Tenant A with 5 decisions, tenant B with 1."""
    principal_cache.clear()
    a, b = await new_tenant(db_session, "a"), await new_tenant(db_session, "b")
    _, reader = await create_api_key(db_session, a, "test", ["decisions:read"])
    _, writer = await create_api_key(db_session, a, "test", ["score:write"])
    _, other = await create_api_key(db_session, b, "test", ["decisions:read"])
    mine = [
        await record_decision(
            db_session,
            record=make_record(a.id, decision="decline" if i == 2 else "approve"),
            keyring=keyring,
            chain_keys=chain_keys,
        )
        for i in range(5)
    ]
    theirs = await record_decision(
        db_session, record=make_record(b.id), keyring=keyring, chain_keys=chain_keys
    )
    return World(reader, writer, other, mine, theirs)


@pytest.fixture
async def client(
    db_session: AsyncSession, chain_keys: ChainKeyring
) -> AsyncIterator[httpx.AsyncClient]:
    """The decisions router on the test's session."""
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)

    async def session_override() -> AsyncIterator[AsyncSession]:
        yield db_session

    @asynccontextmanager
    async def on_test_session() -> AsyncIterator[AsyncSession]:
        yield db_session

    app.dependency_overrides[get_db_session] = session_override
    app.dependency_overrides[get_session_opener] = lambda: on_test_session
    app.dependency_overrides[get_chain_keys] = lambda: chain_keys
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_requires_a_key_with_decisions_read(client: httpx.AsyncClient, world: World) -> None:
    path = f"/v1/decisions/{world.mine[0].id}"
    response = await client.get(path)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    response = await client.get(path, headers=_bearer(world.writer_only))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert (
        await client.get("/v1/decisions", headers=_bearer(world.writer_only))
    ).status_code == 403


async def test_get_returns_the_recorded_decision(client: httpx.AsyncClient, world: World) -> None:
    decision = world.mine[0]
    response = await client.get(f"/v1/decisions/{decision.id}", headers=_bearer(world.reader))
    assert response.status_code == 200
    body = response.json()
    assert body["decision_id"] == decision.id
    assert body["seq"] == 1
    assert body["requested_amount"] == "25000.00"
    assert body["proposed_limit"] == "20000.00"
    assert body["probability_of_default"] == float(decision.probability_of_default)
    assert body["model"] == {"id": "lgbm-2026-11", "version": "1.0.0"}
    assert body["row_hash"] == decision.row_hash
    assert body["sources"]["registry"]["status"] == "timeout"
    assert "payload_ciphertext" not in body


async def test_other_tenants_and_unknown_ids_are_404(
    client: httpx.AsyncClient, world: World
) -> None:
    for decision_id in (world.theirs.id, str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"/v1/decisions/{decision_id}", headers=_bearer(world.reader))
        assert response.status_code == 404
        assert response.json()["code"] == "decision_not_found"
        assert "siren" not in response.text


async def test_list_paginates_newest_first(client: httpx.AsyncClient, world: World) -> None:
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/decisions", params=params, headers=_bearer(world.reader))
        assert response.status_code == 200
        page = response.json()
        seen += [item["seq"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]


async def test_list_filters(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get(
        "/v1/decisions", params={"decision": "decline"}, headers=_bearer(world.reader)
    )
    assert [i["decision_id"] for i in response.json()["items"]] == [world.mine[2].id]
    response = await client.get(
        "/v1/decisions", params={"siren": "732829320"}, headers=_bearer(world.reader)
    )
    assert response.json() == {"items": [], "next_cursor": None}
    response = await client.get(
        "/v1/decisions",
        params={"created_from": world.mine[3].created_at.isoformat()},
        headers=_bearer(world.reader),
    )
    assert [i["seq"] for i in response.json()["items"]] == [5, 4]
    response = await client.get("/v1/decisions", headers=_bearer(world.other_reader))
    assert [i["decision_id"] for i in response.json()["items"]] == [world.theirs.id]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"cursor": "!!!"},
        {"cursor": "czEyYQ"},
        {"siren": "12345"},
        {"created_from": "2026-01-01T00:00:00"},
    ],
)
async def test_list_rejects_bad_parameters(
    client: httpx.AsyncClient, world: World, params: dict[str, str | int]
) -> None:
    response = await client.get("/v1/decisions", params=params, headers=_bearer(world.reader))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
