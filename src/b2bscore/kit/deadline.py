"""The request's deadline, and store calls bounded by it.

Every database and Redis call on a request's path must end by the request's deadline,
whatever the store does: a frozen PostgreSQL (SIGSTOP, a hung disk, a lock) accepts the
TCP connection and never answers. `within` runs the call as a task of its own and stops
waiting at the deadline; the task is cancelled and its clean-up (a rollback on a dead
connection, a cancel request to a stopped server) runs on in the background, never in
the request, which answers 503 with Retry-After at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Final, TypeVar

from starlette.requests import HTTPConnection

from b2bscore.kit.problems import Problem

_T = TypeVar("_T")

# What a request may take beyond the budget when a store stalls: the time to notice,
# build the 503 and send it. Documented in README.md (Limits) and docs/SECURITY.md.
FAULT_MARGIN_SECONDS: Final = 0.1
DEFAULT_DEADLINE_MS: Final = 500
RETRY_AFTER_SECONDS: Final = "2"


class StoreUnavailable(Exception):
    """A store did not answer within the request's budget (answered 503)."""

    def __init__(self, store: str) -> None:
        super().__init__(f"{store} did not answer in time")
        self.store = store


def request_started(connection: HTTPConnection) -> float:
    """When the server began with this request (monotonic), set by the guard middleware."""
    started: float = connection.scope.get("b2b.started") or time.monotonic()
    return started


def request_deadline(connection: HTTPConnection) -> float:
    """The monotonic time by which this request must be answered."""
    state = getattr(connection.app.state, "b2b", None)
    budget_ms = state.settings.deadline_ms if state is not None else DEFAULT_DEADLINE_MS
    return request_started(connection) + budget_ms / 1000


def _quiet(task: asyncio.Task[object]) -> None:
    # An abandoned call's outcome is nobody's business any more: mark it retrieved.
    if not task.cancelled():
        task.exception()


async def within(deadline: float, work: Awaitable[_T], *, store: str) -> _T:
    """work's result, or StoreUnavailable(store) once the deadline has passed."""
    task: asyncio.Future[_T] = asyncio.ensure_future(work)
    try:
        await asyncio.wait((task,), timeout=max(deadline - time.monotonic(), 0.0))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()
    task.add_done_callback(_quiet)  # type: ignore[arg-type]
    raise StoreUnavailable(store)


def store_unavailable_problem(detail: str | None = None) -> Problem:
    """The 503 of a store that failed or did not answer in time."""
    return Problem(
        503,
        "store_unavailable",
        "Service temporarily unavailable",
        detail or "A backing store did not answer in time; nothing was decided. Retry later.",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )
