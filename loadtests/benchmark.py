"""Performance figures of b2bscore on this machine (not a pass/fail test).

Run from the repository root: `.venv/bin/python loadtests/benchmark.py` (loadtests/README.md).
Prints, each as the median of --runs runs:
  1. service overhead: POST /v1/score on warm source cache (zero-latency sandbox behind it),
     req/s at saturation and p50/p99 at a fixed 200 req/s, durable audit rows in PostgreSQL;
  2. the decision core alone (features, prediction + contributions, reasons, policy), µs per
     call on one core;
  3. audit writes per second (committed) under concurrency, one tenant and several, with
     group commit (as the API writes) and with one transaction per row;
  4. MLServer + mlserver-lightgbm serving the same model.txt, same generator and concurrency,
     and the ratio of our throughput to its throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    HOST,
    MODELS_DIR,
    REPO,
    Stack,
    audit_total_rows,
    create_database,
    drop_database,
    free_port,
    pg_url,
    run_cli,
    sigterm_as_interrupt,
    stop_process,
    wait_http,
)
from loadgen import Result, build_request, closed_loop, open_loop
from mix import MixSpec, RequestMix

# Its own virtual environment: MLServer pins versions of FastAPI/uvicorn/pydantic that
# must not leak into ours. Kept beside the scripts (git-ignored) so reruns skip the install.
MLSERVER_VENV = Path(
    os.environ.get("B2BSCORE_MLSERVER_VENV", Path(__file__).resolve().parent / ".mlserver-venv")
)
MLSERVER_MODEL = "b2bscore-lgbm"


def median(values: Sequence[float]) -> float:
    """Median of the runs."""
    return float(statistics.median(values))


def _uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the generator works on the default loop too, a bit slower
        pass


# --- 2. the decision core ---------------------------------------------------------------


def core_benchmark(companies: int, passes: int) -> dict[str, Any]:
    """µs per decision-core call on realistic companies, measured in this process."""
    import gc

    from b2bscore.model.bundle import latest_bundle_path, load_bundle
    from b2bscore.training import world
    from b2bscore.training.dataset import parse_company, sample_request

    bundle = load_bundle(latest_bundle_path(MODELS_DIR))
    cases = []
    for siren in world.sample_sirens(companies, 4242):
        company = world.company(siren)
        bank, books, record = parse_company(company)
        cases.append((bank, books, record, sample_request(siren, 4242, company)))

    from core_benchmark import stage_timings_ns

    def once(case: Any) -> tuple[int, int, int, int]:
        return stage_timings_ns(bundle, *case)

    for case in cases:  # warm caches and lazy imports
        once(case)
    gc.collect()
    totals: list[float] = []
    stages: list[tuple[int, int, int, int]] = []
    for _ in range(passes):
        for case in cases:
            s = once(case)
            stages.append(s)
            totals.append(sum(s) / 1000)
    totals.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    names = ("features", "predict+contrib", "reasons", "policy")
    return {
        "calls": len(totals),
        "p50_us": pct(totals, 50),
        "p99_us": pct(totals, 99),
        "mean_us": statistics.fmean(totals),
        "stages_p50_us": {
            n: pct(sorted(s[i] / 1000 for s in stages), 50) for i, n in enumerate(names)
        },
        "model": bundle.model_id,
        "trees": bundle.booster.num_trees(),
        "features": len(bundle.feature_names),
    }


def run_core(runs: int) -> list[dict[str, Any]]:
    """Decision core on one core: a child process pinned with taskset when available."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    out = []
    for _ in range(runs):
        done = subprocess.run(
            [*pin, sys.executable, __file__, "_core"],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            cwd=REPO,
        )
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


# --- 3. audit writes ---------------------------------------------------------------------


async def audit_benchmark(
    database: str, concurrency: int, tenants: int, duration_s: float, *, group: bool = True
) -> dict[str, Any]:
    """Committed audit rows per second from `concurrency` concurrent tasks.

    group=True goes through `AuditWriter` as the API does (a tenant's concurrent rows share
    the chain lock and one commit); group=False writes each row in its own transaction with
    `record_decision` (one lock hand-over and one commit per row), for comparison.
    """
    from records import record_factory

    from b2bscore.decisions.chainkeys import ChainKeyring
    from b2bscore.decisions.crypto import DataKeyring
    from b2bscore.decisions.service import record_decision
    from b2bscore.decisions.writer import AuditWriter
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.tenants import service as tenant_service

    engine = create_engine(pg_url(database), pool_size=concurrency)
    maker = create_sessionmaker(engine)
    keyring = DataKeyring({"bench": os.urandom(32)})
    chain_keys = ChainKeyring({"bench": os.urandom(32)})
    tenant_ids = []
    async with maker() as session:
        for i in range(tenants):
            tenant = await tenant_service.create_tenant(session, f"bench-{i}-{time.time_ns()}")
            tenant_ids.append(tenant.id)
        await session.commit()
    record = record_factory()

    committed = 0
    errors = 0
    audit = AuditWriter(maker, keyring, chain_keys)
    t_start = time.perf_counter()
    t_end = t_start + duration_s

    async def one_row(tenant_id: str) -> None:
        if group:
            await audit.record(record(tenant_id))
            return
        async with maker() as session:
            await record_decision(
                session, record=record(tenant_id), keyring=keyring, chain_keys=chain_keys
            )

    async def writer(i: int) -> None:
        nonlocal committed, errors
        tenant_id = tenant_ids[i % tenants]
        for _ in range(1_000_000):  # bounded; the clock ends it first
            if time.perf_counter() >= t_end:
                return
            try:
                await one_row(tenant_id)
                committed += 1
            except Exception:  # counted: a failed write is a figure here, not a crash
                errors += 1

    await asyncio.gather(*(writer(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - t_start
    await audit.close()
    await engine.dispose()
    return {"rows_per_s": committed / elapsed, "committed": committed, "errors": errors}


def run_audit(runs: int, concurrency: int, duration_s: float) -> dict[str, list[dict[str, Any]]]:
    """Audit write runs on a fresh database: one tenant (chain lock) and 8 tenants, with
    group commit (as the API writes) and one transaction per row."""
    database = f"b2bscore_bench_audit_{os.getpid()}"
    create_database(database)
    try:
        run_cli(["db", "upgrade"], {**os.environ, "B2BSCORE_DATABASE_URL": pg_url(database)})
        cases = [
            (f"{tenants} tenant{'s' if tenants > 1 else ''}, {mode}", tenants, group)
            for group, mode in ((True, "group commit"), (False, "one commit per row"))
            for tenants in (1, 8)
        ]
        out: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in cases}
        for _ in range(runs):
            for label, tenants, group in cases:
                out[label].append(
                    asyncio.run(
                        audit_benchmark(database, concurrency, tenants, duration_s, group=group)
                    )
                )
        return out
    finally:
        drop_database(database)


# --- 1. service overhead ------------------------------------------------------------------


def _latency_ms(body: bytes) -> float | None:
    try:
        return float(orjson.loads(body)["latency_ms"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


async def _each_once(
    host: str, port: int, requests: Sequence[bytes], concurrency: int
) -> Counter[int]:
    """Send every request exactly once (cache warm-up)."""
    from loadgen import Connection

    queue = list(reversed(requests))
    statuses: Counter[int] = Counter()

    async def worker() -> None:
        conn: Connection | None = None
        while queue:
            request = queue.pop()
            try:
                conn = conn or await Connection.open(host, port)
                status, _ = await asyncio.wait_for(conn.exchange(request), 30)
                statuses[status] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                # A slow warm-up answer only leaves that company cold: note it, go on.
                statuses[0] += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def service_requests(stack: Stack, key: str, count: int) -> tuple[list[bytes], list[bytes]]:
    """(mixed requests for the runs, one request per SIREN for the warm-up)."""
    port = int(stack.api_url.rsplit(":", 1)[1])
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # No fault scenarios: they are never cached and would measure the sandbox, not us.
    mix = RequestMix(MixSpec(distinct=300, repeat_pool=100, scenario_share=0.0), rng_seed=7)
    runs = [build_request(HOST, port, "/v1/score", headers, mix.payload()) for _ in range(count)]
    warm = [
        build_request(
            HOST,
            port,
            "/v1/score",
            headers,
            orjson.dumps({"siren": s, "requested_amount": "1000.00", "product": "bnpl"}),
        )
        for s in [*mix.repeat, *mix.fresh]
    ]
    return runs, warm


def run_service(
    args: argparse.Namespace, profile_out: Path | None
) -> tuple[list[Result], list[Result], dict[str, Any]]:
    """Saturation and fixed-rate runs against the real API on warm source cache."""
    saturation: list[Result] = []
    fixed: list[Result] = []
    info: dict[str, Any] = {}
    with Stack(label="bench", sandbox_profile="zero", workers=args.workers, redis_db=12) as stack:
        key = stack.create_key("bench")
        port = int(stack.api_url.rsplit(":", 1)[1])
        requests, warm = service_requests(stack, key, 20_000)
        for run in range(args.runs):
            # Re-warm: bank data is fresh for 5 minutes only, longer than a full benchmark.
            warmed = asyncio.run(_each_once(HOST, port, warm, 8))
            rows_before = audit_total_rows(stack.database_url)
            sat = asyncio.run(
                closed_loop(
                    HOST,
                    port,
                    requests,
                    concurrency=args.concurrency,
                    duration_s=args.duration,
                    server_latency=_latency_ms,
                )
            )
            fix = asyncio.run(
                open_loop(
                    HOST,
                    port,
                    requests,
                    rate=args.rate,
                    duration_s=args.duration,
                    server_latency=_latency_ms,
                )
            )
            time.sleep(0.5)
            rows_after = audit_total_rows(stack.database_url)
            saturation.append(sat)
            fixed.append(fix)
            print(
                f"  run {run + 1}: warm-up {dict(warmed)}; saturation {sat.rps:.0f} req/s "
                f"{dict(sat.statuses)} err {sat.errors}; at {args.rate:.0f}/s p50 "
                f"{fix.pct(50):.1f} p99 {fix.pct(99):.1f} ms {dict(fix.statuses)} "
                f"err {fix.errors} drop {fix.dropped}; audit rows +{rows_after - rows_before}",
                flush=True,
            )
        sources = _source_statuses(httpx.get(f"{stack.api_url}/metrics", timeout=10).text)
        info["source_statuses"] = sources
        if profile_out is not None:
            info["profile"] = profile_service(stack, port, requests, args, profile_out)
    return saturation, fixed, info


def _source_statuses(metrics: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("b2bscore_source_status_total{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            out[status] = out.get(status, 0.0) + float(value)
    return out


# --- 5. the floors ------------------------------------------------------------------------


async def _floor_tenant(database: str) -> str:
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.tenants import service as tenant_service

    engine = create_engine(pg_url(database))
    try:
        async with create_sessionmaker(engine)() as session:
            tenant = await tenant_service.create_tenant(session, "floor")
            await session.commit()
            return tenant.id
    finally:
        await engine.dispose()


def run_floors(args: argparse.Namespace) -> dict[str, list[Result]]:
    """The HTTP floor and the HTTP + durable audit floor (loadtests/floors_app.py)."""
    database = f"b2bscore_floors_{os.getpid()}"
    create_database(database)
    port = free_port()
    env = {
        **os.environ,
        "B2BSCORE_DATABASE_URL": pg_url(database),
        "FLOOR_DATABASE_URL": pg_url(database),
        "FLOOR_DATA_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    results: dict[str, list[Result]] = {}
    proc: subprocess.Popen[bytes] | None = None
    try:
        run_cli(["db", "upgrade"], env)
        env["FLOOR_TENANT_ID"] = asyncio.run(_floor_tenant(database))
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve().parent / "floors_app.py"),
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        mix = RequestMix(MixSpec(distinct=300, repeat_pool=100, scenario_share=0.0), rng_seed=7)
        bodies = [mix.payload() for _ in range(2_000)]
        headers = {"Content-Type": "application/json"}
        for floor in ("http", "audit"):
            path = f"/floor/{floor}"
            wait_http_post(f"http://{HOST}:{port}{path}", bodies[0], 60, proc)
            requests = [build_request(HOST, port, path, headers, body) for body in bodies]
            results[floor] = []
            for run in range(args.runs):
                res = asyncio.run(
                    closed_loop(
                        HOST, port, requests, concurrency=args.concurrency, duration_s=args.duration
                    )
                )
                results[floor].append(res)
                print(
                    f"  {floor} floor run {run + 1}: {res.rps:.0f} req/s {dict(res.statuses)} "
                    f"err {res.errors} p50 {res.pct(50):.1f} p99 {res.pct(99):.1f} ms",
                    flush=True,
                )
    finally:
        if proc is not None:
            stop_process(proc)
        drop_database(database)
    return results


def wait_http_post(
    url: str, body: bytes, timeout: float, proc: subprocess.Popen[bytes] | None
) -> None:
    """Wait until url answers a POST of body with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode})")
        try:
            response = httpx.post(
                url, content=body, headers={"Content-Type": "application/json"}, timeout=2
            )
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


# --- profile ------------------------------------------------------------------------------

# Frames that name a stage; the first one found walking a stack from its leaf wins.
_STAGES: tuple[tuple[str, str], ...] = (
    ("_commit_batch_postgres", "audit batch: lock, chain head, INSERT, COMMIT (asyncpg)"),
    ("AuditWriter._flush", "audit batch: connection and bookkeeping"),
    ("RowContent.of", "audit row: hash content encoded (outside the lock)"),
    ("prepare_row", "audit row: JSON, payload join, AES-GCM, digest"),
    ("answer_from_decision", "answer: build ScoreResponse"),
    ("build_features", "decision core: features"),
    ("decide_on", "decision core: predict + contributions, reasons, policy"),
    ("parse_raw", "sources: parse provider payloads (pydantic)"),
    ("pack_json", "sources: pack raw payloads (canonical JSON + gzip)"),
    ("SourceCache.get", "sources: source cache read"),
    ("get_json", "sources: provider HTTP calls (httpx/httpcore)"),
    ("SourceCache.put", "sources: cache write (AES-GCM + Redis SET)"),
    ("gather_sources", "sources: fan-out orchestration"),
    ("admit", "auth + rate limit (principal cache, one Redis EVALSHA)"),
    ("get_principal", "auth (principal cache + Redis revocation marker)"),
    ("serialize_response", "FastAPI response serialization"),
    ("request_body_to_args", "FastAPI request validation"),
    ("solve_dependencies", "FastAPI dependencies"),
    ("HttpToolsProtocol", "HTTP parsing (uvicorn/httptools)"),
    ("asyncpg", "asyncpg (other)"),
    ("sqlalchemy", "SQLAlchemy (other)"),
    ("redis", "redis client (other)"),
    ("prometheus_client", "metrics"),
    ("uvloop", "event loop"),
)


def summarize_collapsed(text: str) -> list[tuple[str, float]]:
    """Share of samples per stage from py-spy's collapsed (`--format raw`) output."""
    counts: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        frames = stack.split(";")
        stage = "other / idle"
        for frame in reversed(frames):
            hit = next((name for needle, name in _STAGES if needle in frame), None)
            if hit is not None:
                stage = hit
                break
        counts[stage] += int(n)
    return [(stage, n / total) for stage, n in counts.most_common()] if total else []


def profile_service(
    stack: Stack, port: int, requests: list[bytes], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """py-spy on one API worker while the closed loop saturates the service."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy not installed (pip install py-spy)"}
    workers = [p for p in stack.pids("api") if p != stack.procs["api"].pid]
    # The uvicorn supervisor and the multiprocessing resource tracker are idle; take the
    # worker that burns CPU.
    target = max(workers, key=_cpu_ticks) if workers else stack.procs["api"].pid
    out.parent.mkdir(parents=True, exist_ok=True)
    seconds = int(args.duration)
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(target),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(
            closed_loop(
                HOST,
                port,
                requests,
                concurrency=args.concurrency,
                duration_s=seconds + 2,
                warmup_s=0.5,
            )
        )
        spy.wait(timeout=60)
    finally:
        stop_process(spy) if spy.poll() is None else None
    if not out.exists():
        return {"error": "py-spy wrote nothing (ptrace not permitted?)"}
    return {"pid": target, "file": str(out), "stages": summarize_collapsed(out.read_text())}


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


# --- 4. MLServer ------------------------------------------------------------------------


def ensure_mlserver() -> Path:
    """The mlserver executable, installed once into its own virtual environment."""
    exe = MLSERVER_VENV / "bin" / "mlserver"
    if exe.exists():
        return exe
    print(f"installing mlserver + mlserver-lightgbm into {MLSERVER_VENV} ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)], check=True, timeout=120
    )
    pip = [str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, timeout=300)
    subprocess.run([*pip, "mlserver", "mlserver-lightgbm"], check=True, timeout=1200)
    return exe


def run_mlserver(
    args: argparse.Namespace, model_txt: Path, rows: list[list[float]]
) -> list[Result]:
    """Start MLServer on the same model.txt and drive V2 inference like our API."""
    exe = ensure_mlserver()
    with tempfile.TemporaryDirectory(prefix="b2bscore-mlserver-") as tmp:
        root = Path(tmp)
        model_dir = root / MLSERVER_MODEL
        model_dir.mkdir()
        shutil.copy(model_txt, model_dir / "model.txt")
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": MLSERVER_MODEL,
                    "implementation": "mlserver_lightgbm.LightGBMModel",
                    "parameters": {"uri": "./model.txt", "version": "v1"},
                }
            )
        )
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        (root / "settings.json").write_text(
            json.dumps(
                {
                    "debug": False,
                    "host": HOST,
                    "http_port": http_port,
                    "grpc_port": grpc_port,
                    "metrics_port": metrics_port,
                    "metrics_endpoint": None,
                    "parallel_workers": args.mlserver_workers,
                }
            )
        )
        env = {**os.environ, "OMP_NUM_THREADS": args.mlserver_omp}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = (root / "mlserver.log").open("wb")
        proc = subprocess.Popen(
            [str(exe), "start", str(root)],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_http(f"http://{HOST}:{http_port}/v2/models/{MLSERVER_MODEL}/ready", 120, proc)
            path = f"/v2/models/{MLSERVER_MODEL}/infer"
            headers = {"Content-Type": "application/json"}
            requests = [
                build_request(
                    HOST,
                    http_port,
                    path,
                    headers,
                    orjson.dumps(
                        {
                            "inputs": [
                                {
                                    "name": "input-0",
                                    "shape": [1, len(r)],
                                    "datatype": "FP64",
                                    "data": r,
                                }
                            ]
                        }
                    ),
                )
                for r in rows
            ]
            check = httpx.post(
                f"http://{HOST}:{http_port}{path}",
                content=requests[0].split(b"\r\n\r\n", 1)[1],
                headers=headers,
                timeout=10,
            )
            check.raise_for_status()
            print(f"  mlserver answer: {check.text[:160]}", flush=True)
            results = []
            for run in range(args.runs):
                res = asyncio.run(
                    closed_loop(
                        HOST,
                        http_port,
                        requests,
                        concurrency=args.concurrency,
                        duration_s=args.duration,
                    )
                )
                results.append(res)
                print(
                    f"  run {run + 1}: {res.rps:.0f} req/s {dict(res.statuses)} "
                    f"err {res.errors} p50 {res.pct(50):.1f} p99 {res.pct(99):.1f} ms",
                    flush=True,
                )
            return results
        finally:
            stop_process(proc)
            log.close()


def feature_rows(n: int) -> list[list[float]]:
    """Feature rows of realistic companies, as V2 FP64 data."""
    from b2bscore.features.build import build_features
    from b2bscore.training import world
    from b2bscore.training.dataset import parse_company, sample_request

    rows = []
    for siren in world.sample_sirens(n, 777):
        company = world.company(siren)
        bank, books, record = parse_company(company)
        vector = build_features(bank, books, record, sample_request(siren, 777, company))
        # JSON has no NaN and V2 FP64 refuses null: a missing value goes as 0.0, which
        # walks the trees just as deep, so the work per row is the same.
        rows.append([0.0 if v != v else float(v) for v in vector.values.tolist()])
    return rows


# --- main ---------------------------------------------------------------------------------


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    python = sys.version.split()[0]
    return f"{os.cpu_count()} cores ({model}), {int(mem) / 2**20:.0f} GiB, Python {python}"


def main() -> int:
    """Run the figures and print them."""
    parser = argparse.ArgumentParser(description="b2bscore performance figures")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--audit-concurrency", type=int, default=16)
    # MLServer 1.7.1's parallel inference workers crash at start with uvloop >= 0.22
    # (asyncio.get_event_loop() in mlserver/parallel/worker.py raises): 0 runs inference in
    # the HTTP process, the only setting that starts here.
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=0,
        help="MLServer parallel_workers (0 = inference in the HTTP process)",
    )
    parser.add_argument("--mlserver-omp", default="1", help="OMP_NUM_THREADS for MLServer")
    parser.add_argument("--only", default="core,audit,service,floors,mlserver")
    parser.add_argument("--profile", type=Path, help="write a py-spy collapsed profile here")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    only = set(args.only.split(","))
    _uvloop()
    from b2bscore.model.bundle import latest_bundle_path

    bundle_dir = latest_bundle_path(MODELS_DIR)
    figures: dict[str, Any] = {
        "machine": _machine(),
        "bundle": bundle_dir.name,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(f"machine: {figures['machine']}; bundle {bundle_dir.name}", flush=True)

    with sigterm_as_interrupt():
        if "core" in only:
            print("\n[2] decision core, one core", flush=True)
            core = run_core(args.runs)
            figures["core"] = core
            print(
                f"  p50 {median([c['p50_us'] for c in core]):.0f} µs  "
                f"p99 {median([c['p99_us'] for c in core]):.0f} µs  "
                f"({core[0]['calls']} calls/run, {core[0]['trees']} trees); "
                f"stages p50 {core[0]['stages_p50_us']}",
                flush=True,
            )
        if "audit" in only:
            print(f"\n[3] audit writes, {args.audit_concurrency} concurrent writers", flush=True)
            audit = run_audit(args.runs, args.audit_concurrency, min(args.duration, 10.0))
            figures["audit"] = audit
            for label, runs in audit.items():
                print(
                    f"  {label}: {median([r['rows_per_s'] for r in runs]):.0f} rows/s "
                    f"(runs {[round(r['rows_per_s']) for r in runs]}, "
                    f"errors {sum(r['errors'] for r in runs)})",
                    flush=True,
                )
        ours: list[Result] = []
        if "service" in only:
            print(
                f"\n[1] service: POST /v1/score, {args.workers} workers, warm source cache, "
                f"{args.concurrency} connections / {args.rate:.0f} req/s",
                flush=True,
            )
            ours, fixed, info = run_service(args, args.profile)
            figures["service"] = {
                "saturation_rps": [r.rps for r in ours],
                "fixed_p50_ms": [r.pct(50) for r in fixed],
                "fixed_p99_ms": [r.pct(99) for r in fixed],
                "fixed_server_p50_ms": [r.pct(50, server=True) for r in fixed],
                "fixed_server_p99_ms": [r.pct(99, server=True) for r in fixed],
                "saturation_p50_ms": [r.pct(50) for r in ours],
                "saturation_p99_ms": [r.pct(99) for r in ours],
                **info,
            }
            s = figures["service"]
            print(
                f"  saturation: {median(s['saturation_rps']):.0f} req/s (median), p50 "
                f"{median(s['saturation_p50_ms']):.1f} p99 {median(s['saturation_p99_ms']):.1f} ms"
                f"\n  at {args.rate:.0f} req/s: p50 {median(s['fixed_p50_ms']):.1f} ms, p99 "
                f"{median(s['fixed_p99_ms']):.1f} ms (client); server latency_ms p50 "
                f"{median(s['fixed_server_p50_ms']):.1f} p99 {median(s['fixed_server_p99_ms']):.1f}"
                f"\n  source statuses: {info.get('source_statuses')}",
                flush=True,
            )
            if "profile" in info:
                print("  profile of one worker at saturation:")
                for stage, share in info["profile"].get("stages", [])[:16]:
                    print(f"    {share:6.1%}  {stage}")
                if "error" in info["profile"]:
                    print(f"    {info['profile']['error']}")
        floors: dict[str, list[Result]] = {}
        if "floors" in only:
            print(
                f"\n[5] floors, {args.workers} workers, {args.concurrency} connections: the "
                "validated request alone, then with its durable audit row",
                flush=True,
            )
            floors = run_floors(args)
            figures["floors"] = {k: [r.rps for r in v] for k, v in floors.items()}
            for floor, floor_runs in floors.items():
                print(
                    f"  {floor} floor: {median([r.rps for r in floor_runs]):.0f} req/s", flush=True
                )
        if "mlserver" in only:
            print(
                f"\n[4] MLServer + mlserver-lightgbm, same model.txt, {args.concurrency} "
                f"connections, parallel_workers={args.mlserver_workers}, "
                f"OMP_NUM_THREADS={args.mlserver_omp}",
                flush=True,
            )
            theirs = run_mlserver(args, bundle_dir / "model.txt", feature_rows(500))
            figures["mlserver"] = {
                "rps": [r.rps for r in theirs],
                "p50_ms": [r.pct(50) for r in theirs],
                "p99_ms": [r.pct(99) for r in theirs],
            }
            m = median(figures["mlserver"]["rps"])
            print(f"  MLServer: {m:.0f} req/s (median)", flush=True)
            if ours:
                ratio = median([r.rps for r in ours]) / m
                figures["ratio"] = ratio
                print(
                    f"\nratio b2bscore / MLServer throughput: {ratio:.2f} (goal >= 1.0)", flush=True
                )
            for floor, floor_runs in floors.items():
                floor_ratio = median([r.rps for r in floor_runs]) / m
                figures[f"ratio_{floor}_floor"] = floor_ratio
                print(f"ratio {floor} floor / MLServer: {floor_ratio:.2f}", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_core"]:
        print(json.dumps(core_benchmark(companies=300, passes=10)))
        sys.exit(0)
    sys.exit(main())
