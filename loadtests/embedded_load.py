"""Degradation by load on the embedded default: the same requests at 1 and at 20 clients.

Starts `b2bscore serve` as a new user does (SQLite under a fresh var/, in-process cache,
the sandbox with the `realistic` profile), sends a fixed list of requests drawn from the
load tests' mix one at a time, restarts the server (so that no source cache carries
over), sends the same list from 20 concurrent clients, and prints, per run: 503s and
other failures, the share of degraded answers, open-banking timeouts and answers read from
a consent's snapshot, server latency (the decision's budget), client latency and the
admission wait; and between runs: the share of decisions that differ. A second one-client
run gives the noise floor (the sandbox's faults are keyed per company and day, so it
should be near zero).

The first start of a fresh var/ syncs the sandbox directory's standing consents in the
background (consents/sandbox.py); the script waits until no more snapshots arrive before
the first run, and says how long that took. `--var DIR` keeps var/ in DIR (reused when it
exists: no second wait); `--no-snapshots` measures without waiting (the bank is then
asked in the request for every company not synced yet).

    .venv/bin/python loadtests/embedded_load.py                  # 200 requests
    .venv/bin/python loadtests/embedded_load.py --requests 400 --clients 20

Figures are reported in docs/PERFORMANCE.md ("Degradation by load, embedded default").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mix import RequestMix

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    """The answers of one run, by request index."""

    label: str
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    client_ms: list[float] = field(default_factory=list)
    admission_ms: list[float] = field(default_factory=list)

    def summary(self) -> str:
        """One line of figures."""
        ok = list(self.answers.values())
        degraded = sum(1 for a in ok if a["degraded"])
        ob_timeouts = sum(1 for a in ok if a["sources"]["open_banking"]["status"] == "timeout")
        snapshots = sum(1 for a in ok if a["sources"]["open_banking"]["detail"] == "snapshot")
        latencies = sorted(a["latency_ms"] for a in ok)
        client = sorted(self.client_ms)
        waits = sorted(self.admission_ms)
        total = sum(self.statuses.values())
        return (
            f"{self.label}: {total} requests in {self.wall_s:.1f} s; "
            f"statuses {dict(sorted(self.statuses.items()))}; problems {dict(self.problems)}; "
            f"degraded {degraded}/{len(ok)} ({_share(degraded, len(ok))}); "
            f"open banking timeout {ob_timeouts}/{len(ok)} ({_share(ob_timeouts, len(ok))}); "
            f"open banking from a snapshot {snapshots}/{len(ok)}; "
            f"server latency p50 {_pct(latencies, 50):.0f} ms, p99 {_pct(latencies, 99):.0f} ms; "
            f"client latency p50 {_pct(client, 50):.0f} ms, p99 {_pct(client, 99):.0f} ms; "
            f"admission wait p50 {_pct(waits, 50):.0f} ms, p99 {_pct(waits, 99):.0f} ms"
        )


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "n/a"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values), max(1, math.ceil(q / 100 * len(values)))) - 1]


def differing(a: Run, b: Run) -> tuple[int, int, int]:
    """(decisions that differ, degraded flags that differ, requests answered 200 in both)."""
    both = sorted(set(a.answers) & set(b.answers))
    decisions = sum(1 for i in both if a.answers[i]["decision"] != b.answers[i]["decision"])
    degraded = sum(1 for i in both if a.answers[i]["degraded"] != b.answers[i]["degraded"])
    return decisions, degraded, len(both)


class Server:
    """`b2bscore serve` on the embedded default, in var_root, as a new user starts it."""

    def __init__(self, var_root: Path, port: int, profile: str, workers: int = 1) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("B2BSCORE_")}
        env["B2BSCORE_MODELS_DIR"] = os.environ.get(
            "B2BSCORE_LOADTEST_MODELS", str(REPO / "models")
        )
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "b2bscore",
                "serve",
                "--port",
                str(port),
                "--sandbox-profile",
                profile,
                "--workers",
                str(workers),
            ],
            cwd=var_root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.key = self._read_key()
        # Keep draining the server's output: a full pipe blocks the server's logging, and
        # with it its event loop (seen as requests hanging and syncs stopping).
        self.log = var_root / f"serve-{port}-{int(time.time())}.log"
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_ready()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with self.log.open("a") as out, contextlib.suppress(ValueError, OSError):
            for line in self.process.stdout:  # ends when the server exits (or stop closes it)
                out.write(line)

    def _read_key(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError("b2bscore serve exited")
            match = re.search(r"sandbox API key: (sk_test_\S+)", line)
            if match:
                return match.group(1)
        raise RuntimeError("no sandbox key printed")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("not ready")

    def stop(self) -> None:
        """Terminate and reap."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


async def drive(server: Server, bodies: list[dict[str, str]], clients: int, label: str) -> Run:
    """Send every body once, from `clients` concurrent keep-alive clients."""
    run = Run(label)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    headers = {"Authorization": f"Bearer {server.key}"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                sent = time.monotonic()
                try:
                    response = await http.post("/v1/score", json=bodies[i])
                except httpx.HTTPError as error:  # counted, not fatal: the figure says so
                    run.problems[f"client {type(error).__name__}"] += 1
                    continue
                run.client_ms.append((time.monotonic() - sent) * 1000)
                timing = response.headers.get("server-timing", "")
                if timing.startswith("admission;dur="):
                    run.admission_ms.append(float(timing.split("=", 1)[1]))
                run.statuses[response.status_code] += 1
                if response.status_code == 200:
                    run.answers[i] = response.json()
                else:
                    run.problems[response.json().get("code", "?")] += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    run.wall_s = time.monotonic() - started
    return run


def _snapshot_counts(database: Path) -> tuple[int, int]:
    """(standing consents, those with a snapshot), read from the embedded store."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT count(*), count(snapshot_at) FROM consents WHERE status = 'active'"
            ).fetchone()
    except sqlite3.Error:
        return 0, 0
    return int(row[0]), int(row[1])


def wait_for_snapshots(var_root: Path, quiet_s: float = 30.0) -> None:
    """Wait until no new snapshot has arrived for quiet_s seconds; print how long it took."""
    database = var_root / "var" / "b2bscore.db"
    started = last_change = time.monotonic()
    last = -1
    while True:
        consents, synced = _snapshot_counts(database)
        now = time.monotonic()
        if synced != last:
            last, last_change = synced, now
        elif synced and now - last_change >= quiet_s:
            break
        time.sleep(2)
    print(
        f"standing consents: {consents}, synced {synced} "
        f"(waited {last_change - started:.0f} s for the last one)",
        flush=True,
    )


def main() -> None:
    """Run 1 client, 20 clients, 1 client again; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--profile", default="realistic", help="sandbox profile")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument("--workers", type=int, default=1, help="b2bscore serve --workers")
    parser.add_argument("--var", type=Path, default=None, help="keep (and reuse) var/ here")
    parser.add_argument(
        "--no-snapshots", action="store_true", help="do not wait for the first syncs"
    )
    args = parser.parse_args()

    mix = RequestMix(rng_seed=args.seed)
    bodies = [mix.body() for _ in range(args.requests)]
    plan = [("1 client", 1), (f"{args.clients} clients", args.clients), ("1 client again", 1)]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="b2bscore-embedded-load-") as scratch:
        root = args.var or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        for number, (label, clients) in enumerate(plan):
            # A fresh process per run: no source cached by the previous run.
            server = Server(root, args.port, args.profile, args.workers)
            try:
                if number == 0 and not args.no_snapshots:
                    wait_for_snapshots(root)
                runs.append(asyncio.run(drive(server, bodies, clients, label)))
            finally:
                server.stop()
            print(runs[-1].summary(), flush=True)
    one, many, again = runs
    for a, b in ((one, many), (one, again)):
        decisions, degraded, both = differing(a, b)
        print(
            f"{a.label} vs {b.label}: decisions differ {decisions}/{both} "
            f"({_share(decisions, both)}), degraded flag differs {degraded}/{both} "
            f"({_share(degraded, both)})"
        )


if __name__ == "__main__":
    main()
