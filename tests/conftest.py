"""Shared fixtures: a real PostgreSQL database, a real Redis, the sandbox over real HTTP.

Which servers: see tests/backends.py (configured ones when given, else the PostgreSQL at
127.0.0.1:5432 and a Redis of the session's own, else throwaway servers the session
starts). Never a mock of either.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.kit.db import create_engine, upgrade_database
from tests.backends import (
    BackendError,
    database_url,
    embedded_postgres,
    postgres_admin_choice,
    redis_for_session,
)
from tests.servers import serve_in_thread


async def _pg_exec(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server with the right to create databases."""
    try:
        chosen = postgres_admin_choice()
        if chosen is not None:
            yield chosen
            return
        with embedded_postgres() as dsn:
            yield dsn
    except BackendError as error:
        pytest.exit(str(error), returncode=3)


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_dsn: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, migrated database for this test session."""
    name = f"b2bscore_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_exec(postgres_admin_dsn, f'CREATE DATABASE "{name}"'))
    url = database_url(postgres_admin_dsn, name)
    upgrade_database(url)
    try:
        yield url
    finally:
        asyncio.run(_pg_exec(postgres_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """Engine on the session's PostgreSQL database."""
    engine = create_engine(postgres_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db_session(pg_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session whose work is rolled back after the test, commits included."""
    async with pg_engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: the configured one (never flushed), else the session's own."""
    try:
        with redis_for_session() as url:
            yield url
    except BackendError as error:
        pytest.exit(str(error), returncode=3)


@pytest.fixture(scope="session")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the sandbox providers (zero-latency profile) served over real HTTP."""
    from b2bscore.sandbox.app import create_sandbox_app
    from b2bscore.sandbox.oauth import Grants
    from b2bscore.sandbox.profile import SandboxProfile

    # The banks' grants (and their fault switch) in this session's own file.
    grants = Grants(tmp_path_factory.mktemp("sandbox") / "grants.sqlite3")
    with serve_in_thread(create_sandbox_app(SandboxProfile.preset("zero"), grants=grants)) as url:
        yield url
    grants.close()


@pytest.fixture(scope="session")
def chain_keys() -> ChainKeyring:
    """In-memory audit chain keys (one HMAC key), shared like the session's database."""
    return ChainKeyring({"c1": secrets.token_bytes(32)})
