"""Database engine, sessions and migrations (PostgreSQL via asyncpg, SQLite via aiosqlite)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias

import orjson
from sqlalchemy import Engine, StaticPool, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from b2bscore.kit.files import make_private

log = logging.getLogger(__name__)

# Inside the package, so that an installed wheel finds them as a source checkout does.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


class Base(DeclarativeBase):
    """Declarative base of every table of the service."""


# A connection used again within this many seconds is not pinged first (see below).
IDLE_PING_SECONDS = 1.0


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, *, pool_size: int = 20, echo: bool = False) -> AsyncEngine:
    """An async engine tuned for the backend the URL names."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 5})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        # JSON columns (features, reasons, sources of every audit row) through orjson: the
        # standard library encoder was a visible share of an audit write.
        json_serializer=_json_text,
        json_deserializer=orjson.loads,
        # A steady pool: overflow connections are closed after use, and reopening them
        # under load (TCP, TLS negotiation, auth) costs more than waiting for a free one.
        pool_size=pool_size,
        max_overflow=max(2, pool_size // 4),
        pool_recycle=1800,
        # Most recently used first: under load the same few connections stay hot and the
        # rest stay idle, which is what makes the idle-only ping below almost free.
        pool_use_lifo=True,
        pool_timeout=2,
        # A dead database must fail the request fast, not hang it past its budget.
        connect_args={"timeout": 2, "command_timeout": 5},
    )
    _ping_when_idle(engine)
    return engine


def _private_sqlite_file(url: str) -> None:
    """Create the embedded database 0600 before SQLite does: its -wal and -shm follow suit."""
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:" and not path.startswith("file:"):
        make_private(Path(path))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; synchronous=FULL keeps every
    # committed audit row durable across a power cut.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_sync_sqlite_engine(async_engine: AsyncEngine) -> Engine:
    """A blocking engine on the same SQLite file, for work done whole in one thread.

    The audit writer commits a batch in one hop to a worker thread instead of one event
    loop round trip per statement through aiosqlite: under load each of those waited
    behind every other request's work on the loop.
    """
    url = async_engine.url.set(drivername="sqlite")
    engine = sa_create_engine(
        url, connect_args={"timeout": 5, "check_same_thread": False}, poolclass=StaticPool
    )

    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, record)
        # Transactions are begun below, not by the driver.
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # The write lock first, then the reads: a writer of another process that commits
        # in between cannot leave this batch on a stale snapshot (SQLITE_BUSY_SNAPSHOT,
        # which would have failed it); it waits up to busy_timeout instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use only when it sat idle (a restart may lie behind).

    SQLAlchemy's pool_pre_ping pings on every checkout, and with asyncpg a ping is three
    round trips (BEGIN, ";", ROLLBACK): more than the audit write it precedes. A connection
    back in use within a second was alive a second ago; one that failed to ping is
    replaced by the pool before the caller sees it. A restart under load still costs the
    hot connections one failure: the first invalidates the pool, the audit writer retries
    its batch, and a read answers 503 once.
    """
    pool_events = engine.sync_engine.pool

    @event.listens_for(pool_events, "connect")
    @event.listens_for(pool_events, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        # A connection just opened is as alive as one just used.
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(pool_events, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle = time.monotonic() - record.info.get("checked_in", float("-inf"))
        if idle <= IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError("pooled connection failed its ping") from error


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory; objects stay usable after commit for building the response."""
    return async_sessionmaker(engine, expire_on_commit=False)


# Opens a session that closes when its `async with` block ends (an async_sessionmaker is one).
SessionOpener: TypeAlias = Callable[[], AbstractAsyncContextManager[AsyncSession]]


@asynccontextmanager
async def opened_session(sessions: SessionOpener) -> AsyncIterator[AsyncSession]:
    """A session for one unit of work; a failure to close it is logged, not raised."""
    opened = sessions()
    session = await opened.__aenter__()
    try:
        yield session
    except BaseException as error:
        await _close_quietly(opened, error)
        raise
    await _close_quietly(opened, None)


async def _close_quietly(
    opened: AbstractAsyncContextManager[AsyncSession], error: BaseException | None
) -> None:
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        if error is None:
            await opened.__aexit__(None, None, None)
        else:
            await opened.__aexit__(type(error), error, error.__traceback__)
    except (SQLAlchemyError, OSError) as close_error:
        if close_error is error:
            return  # the unit of work's own error, re-raised by the caller
        # The work is done and its answer may be on its way: a connection that died
        # under the session (a database restart) is discarded by the pool, and must not
        # turn a finished unit of work into a server error.
        log.warning("closing a database session failed: %s", type(close_error).__name__)
        if task is not None and task.cancelling() > cancelling:
            # A cancellation that arrived during the close must not be lost with it.
            raise asyncio.CancelledError from close_error


def alembic_config(url: str) -> Any:
    """Alembic configuration pointing at migrations/ for the given database URL."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates "%": a URL-encoded password or socket path must survive.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations up to revision (blocking)."""
    from alembic import command

    if url.startswith("sqlite"):
        _private_sqlite_file(url)
    command.upgrade(alembic_config(url), revision)


async def upgrade_database_async(url: str, revision: str = "head") -> None:
    """Apply the migrations from async code without blocking the event loop."""
    await asyncio.to_thread(upgrade_database, url, revision)
