"""Admission: at most N decisions in progress per process; the others wait their turn.

A decision's budget (500 ms by default) starts when the service begins with it. With
more decisions in progress than the CPU can finish in their budgets, every one of them is
slowed by all the others: provider answers wait behind other requests' work on the one
event loop, sources are cut at the deadline and audit commits miss their time, so a
company's decision comes to depend on how busy the server is. Admission keeps the
decisions in progress to what the process finishes in time and makes the rest wait, in
arrival order, before their budget starts, as a load balancer's queue would. The wait is
bounded: past it the request is answered 503 `overloaded` with Retry-After, without
anything decided or written. The time waited is measured
(`b2bscore_admission_wait_seconds`) and returned in a `Server-Timing` header, because it
is part of what the client sees although not of the decision's budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from b2bscore.kit.metrics import ADMISSION_REFUSED, ADMISSION_WAIT
from b2bscore.kit.problems import Problem, problem_response

RETRY_AFTER_SECONDS = "1"


class AdmissionMiddleware:
    """Lets at most `limit` requests to `paths` run at once; the others wait in order."""

    def __init__(
        self, app: ASGIApp, *, limit: int, max_wait_seconds: float, paths: Iterable[str]
    ) -> None:
        self.app = app
        self.limit = limit
        self.max_wait_seconds = max_wait_seconds
        self.paths = frozenset(paths)
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slots = self._slots
        if (
            slots is None
            or scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await slots.acquire()
        except TimeoutError:
            ADMISSION_REFUSED.inc()
            problem = Problem(
                503,
                "overloaded",
                "Too many decisions in progress",
                f"No decision could start within {self.max_wait_seconds:g} s; nothing was "
                "decided or recorded. Retry later.",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
            await problem_response(problem, scope.get("path"))(scope, receive, send)
            return
        waited = time.monotonic() - arrived
        ADMISSION_WAIT.observe(waited)
        timing = f"admission;dur={waited * 1000:.1f}".encode()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"server-timing", timing)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            slots.release()
