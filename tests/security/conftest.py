"""Whole API stacks on their OWN fresh PostgreSQL databases, real Redis, real sandbox.

The security tests tamper with rows, cut the database off or revoke keys: each stack
gets a database of its own so that none of it leaks into the other tests' database.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import build_state, close_state, create_app
from b2bscore.kit.db import create_engine, create_sessionmaker, upgrade_database
from b2bscore.kit.settings import Settings
from b2bscore.kit.state import AppState
from b2bscore.tenants import service as tenants
from tests.backends import database_url

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(os.environ.get("B2BSCORE_TEST_MODELS_DIR", REPO / "models"))
HEALTHY = "111111118"


@dataclass(frozen=True)
class StackKeys:
    """Keys of two tenants on a stack's database."""

    tenant_a: str
    tenant_a_name: str
    tenant_b: str
    writer: str  # tenant A, test mode, score:write + decisions:read
    writer_id: str
    reader_only: str  # tenant A, decisions:read
    other_tenant: str  # tenant B, test mode, score:write + decisions:read
    live: str  # tenant A, live mode


@dataclass
class Stack:
    """One API instance on its own database."""

    admin_dsn: str
    db_name: str
    url: str
    settings: Settings
    app: FastAPI
    state: AppState
    client: httpx.AsyncClient
    engine: AsyncEngine
    keys: StackKeys


async def admin_execute(admin_dsn: str, sql: str, *args: Any) -> str:
    """Run one statement on the admin database."""
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


def asyncpg_dsn(url: str) -> str:
    """The plain libpq DSN of a SQLAlchemy asyncpg URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def tamper(url: str, sql: str, *args: Any) -> str:
    """Run sql on the stack's database with triggers off, as an insider with DB access."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    try:
        async with conn.transaction():
            # replica role skips ordinary triggers: what a superuser can always do.
            await conn.execute("SET LOCAL session_replication_role = replica")
            return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_database(admin_dsn: str, label: str) -> AsyncIterator[tuple[str, str]]:
    """(name, SQLAlchemy URL) of a new migrated database, dropped afterwards."""
    name = f"b2bscore_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    await admin_execute(admin_dsn, f'CREATE DATABASE "{name}"')
    url = database_url(admin_dsn, name)
    try:
        await asyncio.to_thread(upgrade_database, url)
        yield name, url
    finally:
        await admin_execute(admin_dsn, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def create_keys(engine: AsyncEngine) -> StackKeys:
    """Two tenants and their keys, committed."""
    async with create_sessionmaker(engine)() as session:
        a = await tenants.create_tenant(session, f"acme-{secrets.token_hex(3)}")
        b = await tenants.create_tenant(session, f"other-{secrets.token_hex(3)}")
        writer_key, writer = await tenants.create_api_key(
            session, a, "test", ["score:write", "decisions:read"]
        )
        _, reader = await tenants.create_api_key(session, a, "test", ["decisions:read"])
        _, other = await tenants.create_api_key(
            session, b, "test", ["score:write", "decisions:read"]
        )
        _, live = await tenants.create_api_key(
            session, a, "live", ["score:write", "decisions:read"]
        )
        await session.commit()
        return StackKeys(a.id, a.name, b.id, writer, writer_key.id, reader, other, live)


@asynccontextmanager
async def app_instance(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One more API instance with its own pools and cache client on the given settings."""
    app = create_app(settings)
    app.state.b2b = await build_state(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api.test", timeout=30
        ) as client:
            yield app, client
    finally:
        await close_state(app.state.b2b)


@asynccontextmanager
async def start_stack(
    admin_dsn: str,
    redis_url: str,
    sandbox_url: str,
    var_dir: Path,
    label: str,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """A fresh database, two tenants with keys, and an API on them."""
    async with fresh_database(admin_dsn, label) as (name, url):
        options: dict[str, Any] = {
            "database_url": url,
            "redis_url": redis_url,
            "sandbox_url": sandbox_url,
            "var_dir": var_dir,
            "models_dir": MODELS_DIR,
            "rate_limit_per_minute": 100_000,
            "unauthenticated_rate_limit_per_minute": 100_000,
            **overrides,
        }
        settings = Settings(**options)
        engine = create_engine(url, pool_size=5)
        try:
            keys = await create_keys(engine)
            async with app_instance(settings) as (app, client):
                yield Stack(
                    admin_dsn, name, url, settings, app, app.state.b2b, client, engine, keys
                )
        finally:
            await engine.dispose()


@pytest.fixture(scope="module")
async def stack(
    postgres_admin_dsn: str,
    redis_url: str,
    sandbox_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """A stack shared by the tests of one module."""
    async with start_stack(
        postgres_admin_dsn, redis_url, sandbox_url, tmp_path_factory.mktemp("var"), "sec"
    ) as built:
        yield built


def bearer(key: str, **extra: str) -> dict[str, str]:
    """Authorization header for key, plus extra headers."""
    return {"Authorization": f"Bearer {key}", **extra}


def score_body(siren: str = HEALTHY, amount: str = "25000.00") -> dict[str, Any]:
    """A valid score request."""
    return {"siren": siren, "requested_amount": amount, "product": "term_loan"}


def assert_problem_json(response: httpx.Response) -> Mapping[str, Any]:
    """The answer is RFC 9457 problem+json, with no stack trace."""
    assert response.headers.get("content-type", "").startswith("application/problem+json"), (
        response.status_code,
        response.text[:300],
    )
    problem: dict[str, Any] = response.json()
    assert problem["status"] == response.status_code
    assert isinstance(problem["code"], str)
    assert "Traceback" not in response.text
    return problem


async def allow_partial_data(engine: AsyncEngine, tenant_id: str, allow: bool) -> None:
    """Set the tenant's partial-data flag and make every principal cached before forget it."""
    from b2bscore.tenants.auth import principal_cache

    async with create_sessionmaker(engine)() as session:
        assert await tenants.set_partial_data(session, tenant_id, allow) is not None
        await session.commit()
    principal_cache.clear()


@asynccontextmanager
async def partial_data_allowed(engine: AsyncEngine, tenant_id: str) -> AsyncIterator[None]:
    """The tenant may score on partial data inside the block, not after it."""
    await allow_partial_data(engine, tenant_id, True)
    try:
        yield
    finally:
        await allow_partial_data(engine, tenant_id, False)
