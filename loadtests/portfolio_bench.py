"""Throughput of the work after the decision, on the production shape (not a gate).

Each figure runs the real setup of `harness.Stack` (a scratch PostgreSQL database, a Redis
db, `b2bscore sandbox` with the zero-latency profile, `b2bscore serve`) plus N
`b2bscore worker` processes on the queue measured:

- `batch`: a CSV of --rows rows uploaded to POST /v1/batches; decisions/s from the batch's
  `started_at` (file split into rows) to its last decision, read from GET /v1/batches/{id};
- `sweep`: --companies watches (spread over --tenants tenants, each watching the same
  companies) put straight in the database, then one `portfolio.sweep` job: the time to
  queue one check per watch, and checks/s until every watch has been checked;
- `webhooks`: a real receiver in its own process (verifies every signature with
  `standardwebhooks`, answers 204) and one test-mode endpoint; events are written into the
  outbox by this process, as any domain does, over --companies ordering keys. A burst
  gives deliveries/s; events at a fixed --rate give the latency from the event's commit
  to its arrival at the receiver (p50, p99).

A run capped by --max-seconds reports the rate so far and the extrapolated time of the
whole. Loopback only; the machine's 2 cores are shared by everything started here.

    python loadtests/portfolio_bench.py batch --rows 100000 --workers 1
    python loadtests/portfolio_bench.py sweep --companies 100000 --workers 2
    python loadtests/portfolio_bench.py webhooks --events 20000 --rate 100 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BIN,
    HOST,
    REPO,
    Stack,
    free_port,
    sigterm_as_interrupt,
    stop_process,
    wait_http,
)

REDIS_DB = int(os.environ.get("B2BSCORE_LOADTEST_REDIS_DB", "5"))


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_workers(stack: Stack, queue: str, count: int, concurrency: int) -> list[Any]:
    """`b2bscore worker` processes on one queue."""
    procs = []
    assert stack.log_dir is not None or stack._tmp is not None
    log_dir = Path(stack._tmp.name) if stack._tmp is not None else Path(".")
    for i in range(count):
        name = f"{queue}-{i + 1}"
        procs.append(
            stack._spawn(
                name,
                [
                    "worker",
                    "--queue",
                    queue,
                    "--metrics-port",
                    "0",
                    "--concurrency",
                    str(concurrency),
                    "--name",
                    name,
                ],
                log_dir,
            )
        )
    return procs


def wait_workers(stack: Stack, count: int, timeout: float = 120) -> None:
    """Until count workers have registered (booted, model loaded): boot is not measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            asyncio.run(_scalar(stack.database_url, "SELECT count(*) FROM procrastinate_workers"))
            >= count
        ):
            return
        time.sleep(0.5)
    raise RuntimeError("workers did not start")


async def _scalar(dsn: str, query: str, *args: Any) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(query, *args))
    finally:
        await conn.close()


def stop_all(procs: list[Any]) -> None:
    """SIGTERM every worker, then wait."""
    for proc in procs:
        stop_process(proc)


def sirens(count: int, seed: int) -> list[str]:
    """Valid SIRENs of the synthetic world."""
    sys.path.insert(0, str(REPO / "src"))
    from b2bscore.training.world import sample_sirens

    return list(sample_sirens(count, seed=seed))


def extrapolate(done: int, total: int, seconds: float) -> str:
    """How long the whole would take at the measured rate."""
    if done <= 0:
        return "n/a"
    whole = seconds * total / done
    return f"{whole:,.0f} s ({whole / 60:.1f} min)"


# --- batch ---------------------------------------------------------------------------


def bench_batch(args: argparse.Namespace) -> None:
    env = {
        "B2BSCORE_BATCH_CHUNK_ROWS": str(args.chunk),
        "B2BSCORE_JOBS_POLL_SECONDS": "0.5",
    }
    with Stack("pbatch", sandbox_profile="zero", workers=1, redis_db=REDIS_DB, extra_env=env) as s:
        key = s.create_key("batchbench")
        pool = sirens(args.distinct, seed=2026)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["siren", "requested_amount", "product", "external_reference"])
        for i in range(args.rows):
            writer.writerow([pool[i % len(pool)], "25000.00", "term_loan", f"r{i}"])
        content = out.getvalue().encode()
        workers = start_workers(s, "batches", args.workers, args.concurrency)
        try:
            wait_workers(s, args.workers)
            with httpx.Client(base_url=s.api_url, timeout=60) as api:
                auth = {"Authorization": f"Bearer {key}"}
                uploaded = time.monotonic()
                r = api.post(
                    "/v1/batches", content=content, headers={**auth, "Content-Type": "text/csv"}
                )
                r.raise_for_status()
                batch_id = r.json()["id"]
                body: dict[str, Any] = {}
                first_seen: tuple[float, int] | None = None
                while True:
                    body = api.get(f"/v1/batches/{batch_id}", headers=auth).json()
                    now = time.monotonic()
                    counts = body["counts"]
                    done = counts["decided"] + counts["failed"]
                    if body["started_at"] is not None and first_seen is None:
                        first_seen = (now, done)
                    if body["status"] == "completed":
                        break
                    if now - uploaded > args.max_seconds:
                        break
                    print(
                        f"  {now - uploaded:6.0f} s  decided {counts['decided']:,}"
                        f"  pending {counts['pending']:,}",
                        flush=True,
                    )
                    time.sleep(5)
        finally:
            stop_all(workers)
        counts = body["counts"]
        print(
            f"\nbatch of {args.rows:,} rows ({args.distinct:,} distinct SIRENs), "
            f"{args.workers} worker(s) x concurrency {args.concurrency}, chunk {args.chunk}"
        )
        created = datetime.fromisoformat(body["created_at"])
        if body["started_at"]:
            started = datetime.fromisoformat(body["started_at"])
            split = (started - created).total_seconds()
            print(f"  upload -> rows split and chunks queued: {split:.1f} s")
        if body["status"] == "completed":
            started = datetime.fromisoformat(body["started_at"])
            finished = datetime.fromisoformat(body["completed_at"])
            seconds = (finished - started).total_seconds()
            print(
                f"  completed: decided {counts['decided']:,}, failed {counts['failed']:,}, "
                f"invalid {counts['invalid']:,} in {seconds:.1f} s"
            )
            rate = counts["decided"] / seconds
            print(f"  RESULT batch workers={args.workers}: {rate:.1f} decisions/s")
        else:
            assert first_seen is not None
            elapsed = time.monotonic() - first_seen[0]
            done = counts["decided"] + counts["failed"] - first_seen[1]
            rate = done / elapsed
            print(f"  capped at {args.max_seconds} s: {counts['decided']:,} decided")
            print(
                f"  RESULT batch workers={args.workers}: {rate:.1f} decisions/s "
                f"(steady state over {elapsed:.0f} s); whole file at this rate: "
                f"{extrapolate(done, args.rows, elapsed)}"
            )
        verify = asyncio.run(_decisions_of(s.database_url, batch_id))
        print(f"  audited decisions under the batch's keys once the workers stopped: {verify:,}")


async def _decisions_of(dsn: str, batch_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM decisions WHERE idempotency_key LIKE $1",
                f"batch:{batch_id}:%",
            )
        )
    finally:
        await conn.close()


# --- sweep ---------------------------------------------------------------------------


async def _seed_watches(stack: Stack, companies: int, tenants: int) -> None:
    """Tenants with a key each, and their watches, straight into the database."""
    per_tenant = -(-companies // tenants)
    pool = sirens(per_tenant, seed=4242)
    conn = await asyncpg.connect(stack.database_url)
    try:
        now = datetime.now(UTC)
        rows = []
        for t in range(tenants):
            stack.create_key(f"sweep-{t}")
            tenant_id, key_id = await conn.fetchrow(
                "SELECT t.id, k.id FROM tenants t JOIN api_keys k ON k.tenant_id = t.id "
                "WHERE t.name = $1 LIMIT 1",
                f"sweep-{t}",
            )
            for i, siren in enumerate(pool):
                if t * per_tenant + i >= companies:
                    break
                rows.append(
                    (
                        str(uuid.uuid4()),
                        tenant_id,
                        "test",
                        key_id,
                        siren,
                        "term_loan",
                        Decimal("10000.00"),
                        "{}",
                        now,
                    )
                )
        await conn.copy_records_to_table(
            "monitored_companies",
            records=rows,
            columns=[
                "id",
                "tenant_id",
                "mode",
                "api_key_id",
                "siren",
                "product",
                "requested_amount",
                "rules",
                "created_at",
            ],
        )
    finally:
        await conn.close()


async def _checked(dsn: str, since: datetime) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM monitored_companies WHERE last_checked_at >= $1", since
            )
        )
    finally:
        await conn.close()


def bench_sweep(args: argparse.Namespace) -> None:
    env = {"B2BSCORE_JOBS_POLL_SECONDS": "0.5", "B2BSCORE_MONITOR_MAX_COMPANIES": "1000000"}
    with Stack("psweep", sandbox_profile="zero", workers=1, redis_db=REDIS_DB, extra_env=env) as s:
        t0 = time.monotonic()
        asyncio.run(_seed_watches(s, args.companies, args.tenants))
        print(
            f"seeded {args.companies:,} watches over {args.tenants} tenants "
            f"in {time.monotonic() - t0:.0f} s",
            flush=True,
        )
        start = datetime.now(UTC)
        workers = start_workers(s, "monitoring", args.workers, args.concurrency)
        try:
            wait_workers(s, args.workers)
            start = datetime.now(UTC)
            begun = time.monotonic()
            # The body of the daily `portfolio.sweep` job, run here to time it on its own
            # while the workers already take the checks, as they do in production.
            queued = asyncio.run(_sweep_queue(s))
            queued_in = time.monotonic() - begun
            print(f"  {queued:,} checks queued in {queued_in:.1f} s", flush=True)
            checked = 0
            while True:
                now = time.monotonic()
                checked = asyncio.run(_checked(s.database_url, start))
                if checked >= args.companies or now - begun > args.max_seconds:
                    break
                print(f"  {now - begun:6.0f} s  checked {checked:,}", flush=True)
                time.sleep(5)
        finally:
            stop_all(workers)
        elapsed = time.monotonic() - begun
        failed = asyncio.run(
            _scalar(
                s.database_url,
                "SELECT count(*) FROM procrastinate_jobs"
                " WHERE task_name = 'portfolio.check' AND status = 'failed'",
            )
        )
        print(
            f"\nsweep of {args.companies:,} watches ({args.tenants} tenants), "
            f"{args.workers} worker(s) x concurrency {args.concurrency}; failed checks {failed}"
        )
        print(f"  RESULT sweep queueing: {queued:,} checks queued in {queued_in:.1f} s")
        rate = checked / elapsed
        if checked >= args.companies:
            print(
                f"  RESULT sweep workers={args.workers}: {args.companies:,} checks in "
                f"{elapsed:.0f} s, {rate:.1f} checks/s"
            )
        else:
            print(
                f"  RESULT sweep workers={args.workers}: capped at {args.max_seconds} s, "
                f"{checked:,} checked, {rate:.1f} checks/s; whole portfolio at this rate: "
                f"{extrapolate(checked, args.companies, elapsed)}"
            )


async def _sweep_queue(stack: Stack) -> int:
    """What `portfolio.sweep` does: page through the watches, queue one check each."""
    sys.path.insert(0, str(REPO / "src"))
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("B2BSCORE_")})
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.kit.jobs import Jobs
    from b2bscore.kit.settings import Settings
    from b2bscore.portfolio import changes
    from b2bscore.portfolio.repository import PortfolioRepository
    from b2bscore.portfolio.tasks import SWEEP_PAGE

    settings = Settings()
    engine = create_engine(settings.resolved_database_url, pool_size=2)
    jobs = Jobs(settings)
    await jobs.open()
    queued = 0
    try:
        after: str | None = None
        while True:
            async with create_sessionmaker(engine)() as session:
                ids = await PortfolioRepository(session).monitored_ids(after, SWEEP_PAGE)
            if not ids:
                return queued
            queued += await changes.queue_checks(jobs, ids, "sweep")
            after = ids[-1]
    finally:
        await jobs.close()
        await engine.dispose()


# --- webhooks ------------------------------------------------------------------------


RECEIVER = """
import sys, time, orjson
from standardwebhooks.webhooks import Webhook
secret = sys.argv[1]
hook = Webhook(secret)
arrivals = []
bad = 0

async def app(scope, receive, send):
    global bad
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET":
        payload = orjson.dumps({"arrivals": arrivals, "bad": bad})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        return
    at = time.time()
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    try:
        hook.verify(body, headers)
        arrivals.append((headers["webhook-id"], at))
    except Exception:
        bad += 1
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools")
"""


async def _emit(
    stack: Stack, events: int, companies: int, rate: float, batch: int
) -> dict[str, float]:
    """Write events into the outbox (as a domain does) and queue their delivery."""
    sys.path.insert(0, str(REPO / "src"))
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith("B2BSCORE_")})
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.kit.jobs import Jobs
    from b2bscore.kit.settings import Settings
    from b2bscore.webhooks import service as webhooks

    settings = Settings()
    engine = create_engine(settings.resolved_database_url, pool_size=5)
    sessions = create_sessionmaker(engine)
    jobs = Jobs(settings)
    await jobs.open()
    committed: dict[str, float] = {}
    conn = await asyncpg.connect(stack.database_url)
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'hookbench'")
    await conn.close()
    try:
        started = time.monotonic()
        sent = 0
        while sent < events:
            n = min(batch, events - sent)
            emitted = webhooks.Emitted()
            async with sessions() as session:
                for i in range(sent, sent + n):
                    emitted.merge(
                        await webhooks.emit_event(
                            session,
                            tenant_id=tenant_id,
                            mode="test",
                            event_type="company.closed",
                            ordering_key=f"company-{i % companies}",
                            data={
                                "monitored_company_id": f"m{i % companies}",
                                "siren": "552100554",
                                "external_reference": None,
                                "detected_at": datetime.now(UTC),
                            },
                        )
                    )
                await session.commit()
            at = time.time()
            for event in emitted.events:
                committed[event.id] = at
            await webhooks.dispatch(jobs, emitted)
            sent += n
            if rate > 0:
                due = started + sent / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        await jobs.close()
        await engine.dispose()
    return committed


def bench_webhooks(args: argparse.Namespace) -> None:
    import subprocess

    env = {"B2BSCORE_JOBS_POLL_SECONDS": "0.5"}
    with Stack("phooks", sandbox_profile="zero", workers=1, redis_db=REDIS_DB, extra_env=env) as s:
        key = s.create_key("hookbench")
        port = free_port()
        with httpx.Client(base_url=s.api_url, timeout=30) as api:
            r = api.post(
                "/v1/webhook-endpoints",
                json={"url": f"http://{HOST}:{port}/hooks", "event_types": ["company.closed"]},
                headers={"Authorization": f"Bearer {key}"},
            )
            r.raise_for_status()
            secret = r.json()["secret"]
        receiver = subprocess.Popen(
            [str(BIN / "python"), "-c", RECEIVER, secret, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        workers = start_workers(s, "webhooks", args.workers, args.concurrency)
        try:
            wait_workers(s, args.workers)
            wait_http(f"http://{HOST}:{port}/", 30, receiver)
            for label, rate, count in (
                ("burst", 0.0, args.events),
                ("paced", args.rate, args.paced),
            ):
                if count <= 0:
                    continue
                with httpx.Client(timeout=30) as http:
                    before = len(http.get(f"http://{HOST}:{port}/").json()["arrivals"])
                t0 = time.time()
                per_txn = args.batch if label == "burst" else 1
                committed = asyncio.run(_emit(s, count, args.companies, rate, per_txn))
                emitted_s = time.time() - t0
                deadline = time.monotonic() + args.max_seconds
                while True:
                    with httpx.Client(timeout=30) as http:
                        got = http.get(f"http://{HOST}:{port}/").json()
                    arrivals = [a for a in got["arrivals"][before:] if a[0] in committed]
                    if len(arrivals) >= count or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                latencies = [(at - committed[eid]) * 1000 for eid, at in arrivals]
                last = max(at for _, at in arrivals)
                span = last - t0
                print(
                    f"\n{label}: {count:,} events over {args.companies} companies "
                    f"(emitted in {emitted_s:.1f} s), {args.workers} worker(s) x "
                    f"concurrency {args.concurrency}; bad signatures {got['bad']}"
                )
                print(
                    f"  delivered {len(arrivals):,}/{count:,} in {span:.1f} s after the "
                    f"first emit: RESULT {label} {len(arrivals) / span:.0f} deliveries/s"
                )
                print(
                    f"  RESULT {label} commit -> receiver latency: "
                    f"p50 {statistics.median(latencies):.0f} ms, "
                    f"p99 {pct(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms"
                )
        finally:
            stop_all(workers)
            stop_process(receiver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("batch")
    b.add_argument("--rows", type=int, default=100_000)
    b.add_argument("--distinct", type=int, default=4000, help="distinct SIRENs in the file")
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--concurrency", type=int, default=4, help="jobs at once per worker")
    b.add_argument("--chunk", type=int, default=200)
    b.add_argument("--max-seconds", type=float, default=600)
    w = sub.add_parser("sweep")
    w.add_argument("--companies", type=int, default=100_000)
    w.add_argument("--tenants", type=int, default=25)
    w.add_argument("--workers", type=int, default=2)
    w.add_argument("--concurrency", type=int, default=16)
    w.add_argument("--max-seconds", type=float, default=600)
    h = sub.add_parser("webhooks")
    h.add_argument("--events", type=int, default=10_000, help="burst size")
    h.add_argument("--paced", type=int, default=3000, help="events at --rate")
    h.add_argument("--rate", type=float, default=50.0)
    h.add_argument("--companies", type=int, default=200)
    h.add_argument("--batch", type=int, default=1, help="events per transaction (burst)")
    h.add_argument("--workers", type=int, default=2)
    h.add_argument("--concurrency", type=int, default=16)
    h.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args()
    with sigterm_as_interrupt():
        {"batch": bench_batch, "sweep": bench_sweep, "webhooks": bench_webhooks}[args.what](args)


if __name__ == "__main__":
    main()
