"""Faults inside the budget: a frozen PostgreSQL, a frozen Redis, a locked audit table.

A frozen store is the hard case: it accepts TCP connections (the kernel's backlog) and
never answers, so no error ever comes. Each test starts a store of its own (initdb and
pg_ctl from this machine's PostgreSQL, a redis-server) and stops it with SIGSTOP, the
postmaster and every backend, then checks that every request is answered within the
budget plus the documented margin, and /readyz within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import select

from b2bscore.decisions.models import Decision, LateCommit
from b2bscore.kit.db import create_engine, create_sessionmaker, upgrade_database
from b2bscore.kit.deadline import FAULT_MARGIN_SECONDS
from b2bscore.kit.settings import Settings
from b2bscore.tenants.auth import principal_cache
from tests.security.conftest import (
    MODELS_DIR,
    Stack,
    StackKeys,
    app_instance,
    assert_problem_json,
    asyncpg_dsn,
    bearer,
    create_keys,
    score_body,
    start_stack,
)
from tests.servers import free_port, own_redis_server

BUDGET_S = 0.5
# What the client measures on top of the server's budget: in process here, so little.
ANSWERED_WITHIN_S = BUDGET_S + FAULT_MARGIN_SECONDS + 0.05
READY_WITHIN_S = 1.0


def _postgres_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster this test started."""

    data: Path
    port: int

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, background workers)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP every process for the block, SIGCONT after it, whatever happens."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; the machine's postgres account runs them.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test's own, on a free port, removed afterwards."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    root = Path(tempfile.mkdtemp(prefix="b2bscore-frozen-"))
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    try:
        subprocess.run(
            _as_postgres(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-w",
                    "-l",
                    str(root / "log"),
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield Cluster(data, port)
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def on_cluster(
    cluster: Cluster, redis_url: str, sandbox_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """The API in process on the throwaway cluster (and the shared test Redis)."""
    conn = await asyncpg.connect(cluster.admin_dsn, timeout=10)
    try:
        await conn.execute("CREATE DATABASE b2bscore")
    finally:
        await conn.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{cluster.port}/b2bscore"
    await asyncio.to_thread(upgrade_database, url)
    settings = Settings(
        database_url=url,
        redis_url=redis_url,
        sandbox_url=sandbox_url,
        var_dir=tmp_path,
        models_dir=MODELS_DIR,
        deadline_ms=int(BUDGET_S * 1000),
        rate_limit_per_minute=100_000,
        unauthenticated_rate_limit_per_minute=100_000,
    )
    engine = create_engine(url, pool_size=2)
    try:
        keys: StackKeys = await create_keys(engine)
        async with app_instance(settings) as (app, client):
            yield Stack(
                cluster.admin_dsn,
                "b2bscore",
                url,
                settings,
                app,
                app.state.b2b,
                client,
                engine,
                keys,
            )
    finally:
        await engine.dispose()
        principal_cache.clear()


async def _timed(call: asyncio.Future[httpx.Response] | object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call  # type: ignore[misc]
    return response, time.monotonic() - started


async def test_a_frozen_database_is_answered_503_within_the_budget(
    on_cluster: Stack, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    stack, client = on_cluster, on_cluster.client
    headers = bearer(stack.keys.writer)
    warm = await client.post("/v1/score", json=score_body(), headers=headers)
    assert warm.status_code == 200, warm.text
    answered = {warm.json()["decision_id"]}
    caplog.set_level(logging.WARNING)

    with frozen(cluster.pids()):
        # Warm principal: the audit commit is what stalls.
        burst = await asyncio.gather(
            *(
                _timed(client.post("/v1/score", json=score_body(), headers=headers))
                for _ in range(12)
            )
        )
        # An idempotency key: the store is asked first whether the key has a decision.
        keyed = await _timed(
            client.post(
                "/v1/score",
                json=score_body(),
                headers=bearer(stack.keys.writer, **{"Idempotency-Key": str(uuid.uuid4())}),
            )
        )
        read = await _timed(
            client.get(f"/v1/decisions/{warm.json()['decision_id']}", headers=headers)
        )
        # The principal cache expired: authentication itself needs the database.
        principal_cache.clear()
        cold = await _timed(client.post("/v1/score", json=score_body(), headers=headers))
        ready = await _timed(client.get("/readyz"))

    for response, elapsed in [*burst, keyed, read, cold]:
        assert response.status_code == 503, response.text
        assert elapsed < ANSWERED_WITHIN_S, f"{elapsed:.3f} s: {response.text}"
        assert int(response.headers["retry-after"]) >= 1
        problem = assert_problem_json(response)
        assert problem["code"] in {"audit_unavailable", "store_unavailable"}
    assert {assert_problem_json(r)["code"] for r, _ in burst} == {"audit_unavailable"}
    assert "Idempotency-Key" in assert_problem_json(burst[0][0])["detail"]
    assert assert_problem_json(cold[0])["code"] == "store_unavailable"
    ready_response, ready_elapsed = ready
    assert ready_response.status_code == 503
    assert ready_response.json()["checks"]["database"].startswith("unavailable")
    assert ready_elapsed < READY_WITHIN_S

    # Sixteen failed requests, a handful of lines: repeated failures are counted, not
    # logged one by one.
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 4, [r.getMessage() for r in lines]

    # Thawed: service resumes, and every row that committed after its 503 is marked.
    after = await client.post("/v1/score", json=score_body(), headers=headers)
    assert after.status_code == 200, after.text
    answered.add(after.json()["decision_id"])
    assert (await client.get("/readyz")).status_code == 200
    await stack.state.audit.close()  # the batches held up by the freeze are settled
    async with create_sessionmaker(stack.engine)() as session:
        decided = set((await session.execute(select(Decision.id))).scalars())
        late = set((await session.execute(select(LateCommit.decision_id))).scalars())
    timings = [round(t, 3) for _, t in [*burst, keyed, read, cold, ready]]
    print(f"\nanswered in (s): {timings}; late commits: {len(late)}")
    assert late, "the rows held up by the freeze committed after their 503s"
    assert decided - answered == late


@pytest.fixture
async def locked_stack(
    postgres_admin_dsn: str, redis_url: str, sandbox_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A stack on a fresh database of the shared server."""
    async with start_stack(postgres_admin_dsn, redis_url, sandbox_url, tmp_path, "late") as s:
        yield s


async def test_a_row_committed_after_its_503_is_marked_and_replayed_by_its_key(
    locked_stack: Stack,
) -> None:
    """The 503's promise: a retry with the same Idempotency-Key returns the late decision."""
    stack = locked_stack
    headers = bearer(stack.keys.writer, **{"Idempotency-Key": f"order-{uuid.uuid4()}"})
    assert (await stack.client.get("/v1/decisions", headers=headers)).status_code == 200
    blocker = await asyncpg.connect(asyncpg_dsn(stack.url), timeout=5)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        # Reads go on (the key is looked up and found free); the audit INSERT waits.
        await blocker.execute("LOCK TABLE decisions IN EXCLUSIVE MODE")
        refused = await stack.client.post("/v1/score", json=score_body(), headers=headers)
        assert refused.status_code == 503
        problem = assert_problem_json(refused)
        assert problem["code"] == "audit_unavailable"
        assert "same Idempotency-Key" in problem["detail"]
        await transaction.rollback()  # the lock goes; the waiting batch commits
    finally:
        await blocker.close()
    await stack.state.audit.close()
    retried = await stack.client.post("/v1/score", json=score_body(), headers=headers)
    assert retried.status_code == 200, retried.text
    decision_id = retried.json()["decision_id"]
    async with create_sessionmaker(stack.engine)() as session:
        rows = (await session.execute(select(Decision.id))).scalars().all()
        late = (await session.execute(select(LateCommit))).scalars().all()
    assert rows.count(decision_id) == 1  # the late row itself, not a second decision
    assert [(n.decision_id, n.mode) for n in late] == [(decision_id, "test")]
    # The note is append-only, like the audit rows.
    conn = await asyncpg.connect(asyncpg_dsn(stack.url), timeout=5)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM late_commits")
    finally:
        await conn.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, which the test may freeze."""
    with own_redis_server(tmp_path) as server:
        yield server


async def test_a_frozen_redis_costs_requests_no_more_than_the_budget(
    postgres_admin_dsn: str,
    sandbox_url: str,
    tmp_path: Path,
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = own_redis
    async with start_stack(postgres_admin_dsn, url, sandbox_url, tmp_path, "redisfrozen") as stack:
        headers = bearer(stack.keys.writer)
        assert (
            await stack.client.post("/v1/score", json=score_body(), headers=headers)
        ).status_code == 200
        with frozen([process.pid]):
            answers = [
                await _timed(stack.client.post("/v1/score", json=score_body(), headers=headers))
                for _ in range(5)
            ]
            keyed = await _timed(
                stack.client.post(
                    "/v1/score",
                    json=score_body(),
                    headers=bearer(stack.keys.writer, **{"Idempotency-Key": str(uuid.uuid4())}),
                )
            )
            ready, ready_elapsed = await _timed(stack.client.get("/readyz"))
        # Redis is a cache: decisions go on, on the in-process fallback, within budget.
        for response, elapsed in [*answers, keyed]:
            assert response.status_code == 200, response.text
            assert elapsed < ANSWERED_WITHIN_S, elapsed
        assert ready.status_code == 200
        assert ready.json()["checks"]["cache"].startswith("degraded")
        assert ready_elapsed < READY_WITHIN_S


async def test_on_sqlite_a_late_row_is_marked_and_replayed_by_its_key(
    sandbox_url: str, tmp_path: Path
) -> None:
    """The same promise on the embedded default: another process holds the write lock."""
    path = tmp_path / "b2bscore.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade_database, url)
    settings = Settings(
        database_url=url,
        sandbox_url=sandbox_url,
        var_dir=tmp_path,
        models_dir=MODELS_DIR,
        rate_limit_per_minute=100_000,
        unauthenticated_rate_limit_per_minute=100_000,
    )
    engine = create_engine(url)
    try:
        keys = await create_keys(engine)
        async with app_instance(settings) as (app, client):
            headers = bearer(keys.writer, **{"Idempotency-Key": f"order-{uuid.uuid4()}"})
            assert (await client.get("/v1/decisions", headers=headers)).status_code == 200
            blocker = sqlite3.connect(path, isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")  # what a second process's writer holds
                # (The time bound is the frozen-PostgreSQL test's business.)
                refused = await client.post("/v1/score", json=score_body(), headers=headers)
                assert refused.status_code == 503, refused.text
                assert assert_problem_json(refused)["code"] == "audit_unavailable"
            finally:
                blocker.rollback()
                blocker.close()
            await app.state.b2b.audit.close()
            retried = await client.post("/v1/score", json=score_body(), headers=headers)
            assert retried.status_code == 200, retried.text
            decision_id = retried.json()["decision_id"]
        async with create_sessionmaker(engine)() as session:
            late = (await session.execute(select(LateCommit.decision_id))).scalars().all()
            keyed = (
                (
                    await session.execute(
                        select(Decision.id).where(Decision.idempotency_key.is_not(None))
                    )
                )
                .scalars()
                .all()
            )
        assert late == [decision_id]
        assert keyed == [decision_id]
        check = sqlite3.connect(path)
        try:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                check.execute("DELETE FROM late_commits")
        finally:
            check.close()
    finally:
        await engine.dispose()
        principal_cache.clear()
