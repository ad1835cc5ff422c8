"""Degradation by load on the embedded default: the same requests at 1 and at 20 clients.

Starts `b2bscore serve` as a new user does (SQLite under a fresh var/, in-process cache,
the sandbox with the `realistic` profile), sends a fixed list of requests drawn from the
load tests' mix one at a time, restarts the server (so that no source cache carries
over), sends the same list from 20 concurrent clients, and prints, per run: 503s and
other failures, the share of degraded answers, open-banking timeouts, server latency;
and between runs: the share of decisions that differ. A second one-client run gives the
noise floor (the realistic sandbox injects random faults: ~1 % timeouts per provider).

    .venv/bin/python loadtests/embedded_load.py                  # 200 requests, ~2 min
    .venv/bin/python loadtests/embedded_load.py --requests 400 --clients 20

Figures are reported in docs/PERFORMANCE.md ("Degradation by load, embedded default").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import subprocess
import sys
import tempfile
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

    def summary(self) -> str:
        """One line of figures."""
        ok = list(self.answers.values())
        degraded = sum(1 for a in ok if a["degraded"])
        ob_timeouts = sum(1 for a in ok if a["sources"]["open_banking"]["status"] == "timeout")
        latencies = sorted(a["latency_ms"] for a in ok)
        total = sum(self.statuses.values())
        return (
            f"{self.label}: {total} requests in {self.wall_s:.1f} s; "
            f"statuses {dict(sorted(self.statuses.items()))}; problems {dict(self.problems)}; "
            f"degraded {degraded}/{len(ok)} ({_share(degraded, len(ok))}); "
            f"open banking timeout {ob_timeouts}/{len(ok)} ({_share(ob_timeouts, len(ok))}); "
            f"server latency p50 {_pct(latencies, 50):.0f} ms, p99 {_pct(latencies, 99):.0f} ms"
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
        self._wait_ready()

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
                response = await http.post("/v1/score", json=bodies[i])
                run.statuses[response.status_code] += 1
                if response.status_code == 200:
                    run.answers[i] = response.json()
                else:
                    run.problems[response.json().get("code", "?")] += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    run.wall_s = time.monotonic() - started
    return run


def main() -> None:
    """Run 1 client, 20 clients, 1 client again; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--profile", default="realistic", help="sandbox profile")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument("--workers", type=int, default=1, help="b2bscore serve --workers")
    args = parser.parse_args()

    mix = RequestMix(rng_seed=args.seed)
    bodies = [mix.body() for _ in range(args.requests)]
    plan = [("1 client", 1), (f"{args.clients} clients", args.clients), ("1 client again", 1)]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="b2bscore-embedded-load-") as root:
        for label, clients in plan:
            # A fresh process per run: no source cached by the previous run.
            server = Server(Path(root), args.port, args.profile, args.workers)
            try:
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
