"""Starts and stops the real setup (PostgreSQL database, Redis db, sandbox, API) for load runs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
# Bundles to serve; another directory lets the scripts be tried before a bundle is shipped.
MODELS_DIR = Path(os.environ.get("B2BSCORE_LOADTEST_MODELS", REPO / "models"))
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # loopback only: these scripts never target another machine
PG_ADMIN_DSN = os.environ.get(
    "B2BSCORE_LOADTEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST_PORT = os.environ.get("B2BSCORE_LOADTEST_REDIS", "redis://127.0.0.1:6379")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pg_url(database: str, driver: str = "postgresql+asyncpg") -> str:
    """URL of a database on the local PostgreSQL server."""
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1]
    return f"{driver}://{base}/{database}"


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_database(name: str) -> None:
    """CREATE DATABASE name (dropping a leftover of the same name first)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))


def drop_database(name: str) -> None:
    """DROP DATABASE name, even with connections still open."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def flush_redis(db: int) -> None:
    """Empty one Redis logical database (never the whole server: others share it)."""
    client = redis.Redis.from_url(f"{REDIS_HOST_PORT}/{db}", socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll url until it answers 200; fail early when proc has died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as error:
            last = type(error).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s: {last}")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group we started (uvicorn workers included), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def run_cli(args: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> str:
    """Run `b2bscore ARGS` to completion and return its stdout."""
    done = subprocess.run(
        [str(BIN / "b2bscore"), *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"b2bscore {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class Stack:
    """The API with N workers, the sandbox, a fresh PostgreSQL database and a Redis db."""

    label: str
    sandbox_profile: str = "realistic"
    workers: int = 2
    redis_db: int = 11
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    database: str = ""
    api_url: str = ""
    sandbox_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def database_url(self) -> str:
        """asyncpg DSN of the stack's database (for direct checks)."""
        return pg_url(self.database, "postgresql")

    def start(self) -> None:
        """Create the database, migrate it, start sandbox and API, wait for /readyz."""
        self._tmp = tempfile.TemporaryDirectory(prefix=f"b2bscore-{self.label}-")
        tmp = Path(self._tmp.name)
        log_dir = self.log_dir or tmp
        log_dir.mkdir(parents=True, exist_ok=True)
        self.database = f"b2bscore_{self.label}_{os.getpid()}"
        create_database(self.database)
        flush_redis(self.redis_db)
        sandbox_port, api_port = free_port(), free_port()
        self.sandbox_url = f"http://{HOST}:{sandbox_port}"
        self.api_url = f"http://{HOST}:{api_port}"
        data_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.env = {
            **os.environ,
            "B2BSCORE_DATABASE_URL": pg_url(self.database),
            "B2BSCORE_REDIS_URL": f"{REDIS_HOST_PORT}/{self.redis_db}",
            "B2BSCORE_SANDBOX_URL": self.sandbox_url,
            "B2BSCORE_SANDBOX_PROFILE": self.sandbox_profile,
            "B2BSCORE_VAR_DIR": str(tmp / "var"),
            "B2BSCORE_MODELS_DIR": str(MODELS_DIR),
            # Set explicitly so that the workers do not race to create a key file.
            "B2BSCORE_DATA_KEYS": f"loadtest:{data_key}",
            # The limiter is not what is measured here: 600/min would answer 429s.
            "B2BSCORE_RATE_LIMIT_PER_MINUTE": "100000000",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
            **self.extra_env,
        }
        (tmp / "metrics").mkdir()
        run_cli(["db", "upgrade"], self.env)
        self.procs["sandbox"] = self._spawn(
            "sandbox", ["sandbox", "--host", HOST, "--port", str(sandbox_port)], log_dir
        )
        wait_http(f"{self.sandbox_url}/healthz", 60, self.procs["sandbox"])
        self.procs["api"] = self._spawn(
            "api",
            ["serve", "--host", HOST, "--port", str(api_port), "--workers", str(self.workers)],
            log_dir,
        )
        wait_http(f"{self.api_url}/readyz", 90, self.procs["api"])
        # Every worker must be up, not just the first that answered: a few more probes.
        for _ in range(self.workers * 4):
            wait_http(f"{self.api_url}/readyz", 30, self.procs["api"])

    def create_key(self, tenant: str = "loadtest") -> str:
        """A sk_test_ key of a (new) tenant: the last line `keys create` prints."""
        out = run_cli(["keys", "create", "--tenant", tenant, "--mode", "test"], self.env)
        return out.strip().splitlines()[-1].strip()

    def _spawn(self, name: str, args: Sequence[str], log_dir: Path) -> subprocess.Popen[bytes]:
        log = (log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        # Own session, so that teardown can signal uvicorn's worker processes too.
        return subprocess.Popen(
            [str(BIN / "b2bscore"), *args],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self, name: str = "api") -> list[int]:
        """PIDs of a started process and its children (the uvicorn workers)."""
        proc = self.procs[name]
        out = subprocess.run(
            ["pgrep", "-g", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        """Stop everything this stack started and drop its database; never raises."""
        for name in ("api", "sandbox"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                with contextlib.suppress(Exception):
                    stop_process(proc)
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self.database:
            with contextlib.suppress(Exception):
                drop_database(self.database)
        with contextlib.suppress(Exception):
            flush_redis(self.redis_db)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that `finally` teardown runs under CI kill."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _count_rows(dsn: str, ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT id, count(*) AS n FROM decisions WHERE id = ANY($1::text[]) GROUP BY id", ids
        )
        return {r["id"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


def audit_row_counts(dsn: str, ids: list[str]) -> dict[str, int]:
    """Rows in `decisions` per decision id (absent ids have none)."""
    return asyncio.run(_count_rows(dsn, ids)) if ids else {}


async def _total_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM decisions"))
    finally:
        await conn.close()


def audit_total_rows(dsn: str) -> int:
    """All rows of `decisions`."""
    return asyncio.run(_total_rows(dsn))
