"""Locust scenario: lenders calling POST /v1/score with the realistic request mix.

Environment:
  B2BSCORE_LOADTEST_KEY       sk_test_ key sent as `Authorization: Bearer ...` (required)
  B2BSCORE_LOADTEST_IDS       file to write one line per answer into (optional):
                              status,decision_id,client_ms,server_ms,degraded,decision
  B2BSCORE_LOADTEST_USER_RPS  requests per second per user (default 2: 50 users -> 100 rps)

Every user draws from its own RequestMix (loadtests/mix.py): ~78 % fresh companies out of
5,000, ~20 % repeat customers out of 200, ~2 % fault scenario SIRENs, all four products.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import orjson
from locust import constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser
from mix import RequestMix

KEY = os.environ.get("B2BSCORE_LOADTEST_KEY", "")
IDS_FILE = os.environ.get("B2BSCORE_LOADTEST_IDS")
USER_RPS = float(os.environ.get("B2BSCORE_LOADTEST_USER_RPS", "2"))
MAX_RECORDS = 2_000_000  # memory bound for very long runs; the gate runs ~60 s

# One line per answer; kept in memory and written once at the end so that disk writes
# never sit on the request path of the (single, CPU-sharing) locust process.
_records: list[str] = []
_user_seq = itertools.count()


class Lender(FastHttpUser):
    """A lender's checkout flow asking for instant decisions."""

    wait_time = constant_throughput(USER_RPS)
    # A connection per user, as a lender's HTTP client pool would hold.
    concurrency = 1
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        """Own draw sequence per user: reproducible, yet users do not move in lockstep."""
        if not KEY:
            raise RuntimeError("set B2BSCORE_LOADTEST_KEY to a sk_test_ key")
        self.mix = RequestMix(rng_seed=next(_user_seq))
        self.headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    @task
    def score(self) -> None:
        """POST /v1/score once and keep what the gate checks."""
        payload = self.mix.payload()
        started = time.perf_counter()
        with self.client.post(
            "/v1/score", data=payload, headers=self.headers, catch_response=True
        ) as response:
            client_ms = (time.perf_counter() - started) * 1000
            status = response.status_code or 0
            if status != 200:
                text = (response.text or "")[:200] if status else str(response.error)
                response.failure(f"HTTP {status}: {text}")
                _record(status, "", client_ms, float("nan"), "", "")
                return
            try:
                body: dict[str, Any] = orjson.loads(response.content or b"")
                decision_id = str(body["decision_id"])
                server_ms = float(body["latency_ms"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                response.failure(f"bad answer: {type(error).__name__}")
                _record(status, "", client_ms, float("nan"), "", "")
                return
            response.success()
            _record(
                status,
                decision_id,
                client_ms,
                server_ms,
                "1" if body.get("degraded") else "0",
                str(body.get("decision", "")),
            )


def _record(
    status: int, decision_id: str, client_ms: float, server_ms: float, degraded: str, outcome: str
) -> None:
    if len(_records) < MAX_RECORDS:
        _records.append(
            f"{status},{decision_id},{client_ms:.3f},{server_ms:.3f},{degraded},{outcome}"
        )


_written = False


def _write_records(**_: Any) -> None:
    global _written
    if IDS_FILE is None or _written:
        return
    _written = True
    path = Path(IDS_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in _records))


events.test_stop.add_listener(_write_records)
events.quitting.add_listener(_write_records)
