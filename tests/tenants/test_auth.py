"""Bearer authentication and scope checks through a small FastAPI app."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.deps import get_db_session, get_session_opener
from b2bscore.kit.problems import install_problem_handlers
from b2bscore.tenants.auth import Authenticated, Principal, principal_cache, requires
from b2bscore.tenants.keys import hash_key
from b2bscore.tenants.service import create_api_key, create_tenant, revoke_api_key


@pytest.fixture(autouse=True)
def _fresh_principal_cache() -> None:
    principal_cache.clear()


@pytest.fixture
async def client(db_session: AsyncSession) -> AsyncIterator[httpx.AsyncClient]:
    """An app with one authenticated route and one that needs decisions:read."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/whoami")
    async def whoami(principal: Authenticated) -> dict[str, str]:
        return {"tenant": principal.tenant_name, "mode": principal.mode}

    @app.get("/reader")
    async def reader(
        principal: Annotated[Principal, requires("decisions:read")],
    ) -> dict[str, str]:
        return {"key": principal.key_id}

    async def session_override() -> AsyncIterator[AsyncSession]:
        yield db_session

    @asynccontextmanager
    async def on_test_session() -> AsyncIterator[AsyncSession]:
        yield db_session

    app.dependency_overrides[get_db_session] = session_override
    app.dependency_overrides[get_session_opener] = lambda: on_test_session
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_missing_credentials_are_401_with_challenge(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = await client.get("/whoami", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "unauthorized"


async def test_unknown_and_malformed_keys_are_401(client: httpx.AsyncClient) -> None:
    for key in ("sk_test_" + secrets.token_urlsafe(32), "sk_test_" + "x" * 500, "nope"):
        response = await client.get("/whoami", headers=_bearer(key))
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"


async def test_valid_key_is_the_principal(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    tenant = await create_tenant(db_session, f"auth-{secrets.token_hex(4)}")
    _, key = await create_api_key(db_session, tenant, "live", ["decisions:read"])
    response = await client.get("/whoami", headers=_bearer(key))
    assert response.status_code == 200
    assert response.json() == {"tenant": tenant.name, "mode": "live"}


async def test_missing_scope_is_403(client: httpx.AsyncClient, db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, f"auth-{secrets.token_hex(4)}")
    _, writer = await create_api_key(db_session, tenant, "test", ["score:write"])
    reader_key, reader = await create_api_key(db_session, tenant, "test", ["decisions:read"])
    response = await client.get("/reader", headers=_bearer(writer))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    response = await client.get("/reader", headers=_bearer(reader))
    assert response.status_code == 200
    assert response.json() == {"key": reader_key.id}


async def test_revocation_in_this_process_is_immediate(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    tenant = await create_tenant(db_session, f"auth-{secrets.token_hex(4)}")
    api_key, key = await create_api_key(db_session, tenant, "test", ["decisions:read"])
    assert (await client.get("/whoami", headers=_bearer(key))).status_code == 200
    assert principal_cache.get(hash_key(key)) is not None
    await revoke_api_key(db_session, api_key.id)
    await db_session.commit()
    # The revoking process drops its cached principal: no delay here.
    assert principal_cache.get(hash_key(key)) is None
    assert (await client.get("/whoami", headers=_bearer(key))).status_code == 401


async def test_without_a_shared_cache_other_processes_wait_out_the_ttl(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    tenant = await create_tenant(db_session, f"auth-{secrets.token_hex(4)}")
    api_key, key = await create_api_key(db_session, tenant, "test", ["decisions:read"])
    assert (await client.get("/whoami", headers=_bearer(key))).status_code == 200
    cached = principal_cache.get(hash_key(key))
    assert cached is not None
    await revoke_api_key(db_session, api_key.id)
    await db_session.commit()
    # What another process still holds: the documented delay when there is no Redis.
    principal_cache.put(hash_key(key), cached)
    assert (await client.get("/whoami", headers=_bearer(key))).status_code == 200
    principal_cache.clear()  # what the TTL running out does
    assert (await client.get("/whoami", headers=_bearer(key))).status_code == 401


async def test_concurrent_misses_of_one_key_share_one_database_lookup(
    db_session: AsyncSession,
) -> None:
    tenant = await create_tenant(db_session, f"herd-{secrets.token_hex(3)}")
    _, key = await create_api_key(db_session, tenant, "test", ["decisions:read"])
    opened = 0
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/whoami")
    async def whoami(principal: Authenticated) -> dict[str, str]:
        return {"tenant": principal.tenant_name}

    @asynccontextmanager
    async def counting_session() -> AsyncIterator[AsyncSession]:
        nonlocal opened
        opened += 1
        yield db_session

    app.dependency_overrides[get_session_opener] = lambda: counting_session
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answers = await asyncio.gather(
            *(http.get("/whoami", headers=_bearer(key)) for _ in range(10))
        )
    assert [a.status_code for a in answers] == [200] * 10
    assert opened == 1  # one lookup for the ten requests that missed the cache together
