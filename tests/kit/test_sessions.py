"""opened_session: a failed close is logged, never hides the work's error or a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any, cast

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.db import opened_session


class _Opened:
    """An opener whose close fails the way a session on a dead connection does."""

    def __init__(self, close_delay: float = 0.0) -> None:
        self.close_delay = close_delay
        self.exit_args: tuple[Any, ...] | None = None

    def __call__(self) -> _Opened:
        return self

    async def __aenter__(self) -> AsyncSession:
        return cast(AsyncSession, object())

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exit_args = (kind, error, tb)
        # Like SQLAlchemy's close of a dead connection: it finishes its cleanup when
        # cancelled and then raises its own error, so the cancellation is swallowed.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(self.close_delay)
        raise OperationalError("close", {}, ConnectionResetError("connection was closed"))


async def test_a_failed_close_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    opener = _Opened()
    with caplog.at_level(logging.WARNING, "b2bscore.kit.db"):
        async with opened_session(opener):
            pass
    assert opener.exit_args == (None, None, None)
    assert "closing a database session failed: OperationalError" in caplog.text


async def test_the_work_s_own_error_goes_through_and_the_close_sees_it() -> None:
    opener = _Opened()
    with pytest.raises(KeyError, match="work"):
        async with opened_session(opener):
            raise KeyError("work")
    assert opener.exit_args is not None
    assert opener.exit_args[0] is KeyError


async def test_a_cancellation_during_a_failing_close_is_not_lost() -> None:
    opener = _Opened(close_delay=0.5)
    closing = asyncio.Event()

    async def unit_of_work() -> str:
        async with opened_session(opener):
            closing.set()
        return "finished"

    task = asyncio.create_task(unit_of_work())
    await closing.wait()
    await asyncio.sleep(0.05)  # inside the close now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
