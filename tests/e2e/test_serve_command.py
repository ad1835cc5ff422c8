"""`b2bscore serve` as a user runs it: what it announces, when, and how it exits."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.e2e


@dataclass
class Serve:
    """A running `b2bscore serve` and the lines it printed so far."""

    process: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def line_starting(self, prefix: str, timeout: float = 90) -> str:
        """The first stdout line starting with prefix; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    pytest.fail(f"serve exited with {self.process.returncode} before {prefix!r}")
                continue
            if line.startswith(prefix):
                return line
        pytest.fail(f"no {prefix!r} within {timeout} s")

    def printed(self) -> list[str]:
        """Every line printed so far."""
        out = []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return out


def _env(tmp_path: Path, sandbox_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B2BSCORE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        B2BSCORE_VAR_DIR=str(tmp_path / "var"),
        B2BSCORE_SANDBOX_URL=sandbox_url,  # the session's sandbox: no second one started
        **extra,
    )
    return env


@contextmanager
def serve(env: dict[str, str], port: int, workers: int) -> Iterator[Serve]:
    """`python -m b2bscore serve` on port with workers, stopped at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    running = Serve(process, port)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stdout is not None
        process.stdout.close()


def test_the_url_and_key_are_announced_once_the_service_is_ready(
    tmp_path: Path, sandbox_url: str
) -> None:
    # Two workers: the supervisor's path (one worker runs the same announcement code).
    port = free_port()
    with serve(_env(tmp_path, sandbox_url), port, 2) as running:
        announced = running.line_starting("b2bscore listening on ")
        # Printed only after /readyz answered: it answers now, at the first try.
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert f"http://127.0.0.1:{port}" in announced
        key = running.line_starting("sandbox API key: ").removeprefix("sandbox API key: ")
        assert key.startswith("sk_test_")
        try_line = running.line_starting("try: curl ")
        assert key in try_line
        scored = httpx.post(
            f"http://127.0.0.1:{port}/score",
            headers={"Authorization": f"Bearer {key}"},
            json={"siren": "111111118", "requested_amount": "25000.00", "product": "term_loan"},
            timeout=10,
        )
        assert scored.status_code == 200, scored.text
        running.process.send_signal(signal.SIGTERM)
        # A clean stop: uvicorn re-raises the SIGTERM it handled once it has shut down.
        assert running.process.wait(timeout=20) in {0, -signal.SIGTERM}


def _exits_non_zero_announcing_nothing(running: Serve) -> None:
    assert running.process.wait(timeout=90) != 0
    time.sleep(0.2)  # let the reader drain what was printed
    assert not any("listening" in line for line in running.printed())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_already_taken_exits_non_zero_and_announces_nothing(
    tmp_path: Path, sandbox_url: str, workers: int
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with serve(_env(tmp_path, sandbox_url), taken.getsockname()[1], workers) as running:
            _exits_non_zero_announcing_nothing(running)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_database_url_exits_non_zero_and_announces_nothing(
    tmp_path: Path, sandbox_url: str, workers: int
) -> None:
    env = _env(tmp_path, sandbox_url, B2BSCORE_DATABASE_URL="postgresql+nosuchdriver://x@h/db")
    with serve(env, free_port(), workers) as running:
        _exits_non_zero_announcing_nothing(running)


def test_workers_that_fail_to_start_exit_non_zero(tmp_path: Path, sandbox_url: str) -> None:
    # Past every check of the command: the app's own start-up (no model bundle) fails in
    # each worker, which uvicorn's supervisor alone turned into exit status 0. (With one
    # worker uvicorn.run exits non-zero itself; the checks above cover that path.)
    (tmp_path / "no-models").mkdir()
    env = _env(tmp_path, sandbox_url, B2BSCORE_MODELS_DIR=str(tmp_path / "no-models"))
    with serve(env, free_port(), 2) as running:
        _exits_non_zero_announcing_nothing(running)
