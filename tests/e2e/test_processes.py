"""End to end: the service and the sandbox as real processes, over real HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

SCENARIOS = {
    "111111118": {"approve"},
    "444444442": {"decline"},
    "555555556": {"decline"},
    "333333334": {"review", "decline"},
    "222222226": {"review", "decline"},
    "666666664": {"review", "decline"},
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B2BSCORE_")}
    models = os.environ.get("B2BSCORE_TEST_MODELS_DIR", str(REPO / "models"))
    env.update(PYTHONUNBUFFERED="1", B2BSCORE_MODELS_DIR=models, **extra)
    return env


def _wait_for(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout} s")


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _score_scenarios(base_url: str, key: str) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as client:
        for siren, expected in SCENARIOS.items():
            started = time.monotonic()
            response = client.post(
                "/v1/score",
                json={"siren": siren, "requested_amount": "20000.00", "product": "credit_line"},
            )
            elapsed = time.monotonic() - started
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["decision"] in expected, (siren, answer["sources"], answer["reasons"][:2])
            assert answer["reasons"]
            assert elapsed < 1.0
            stored = client.get(f"/v1/decisions/{answer['decision_id']}")
            assert stored.status_code == 200
            assert stored.json()["decision"] == answer["decision"]
        collective = client.post(
            "/v1/score",
            json={"siren": "444444442", "requested_amount": "5000.00", "product": "bnpl"},
        ).json()
        assert collective["reasons"][0]["code"] == "RULE_COLLECTIVE_PROCEEDINGS"


@pytest.fixture
def embedded_service(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`b2bscore serve` on the embedded default, as a new user starts it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    drain: threading.Thread | None = None
    try:
        assert process.stdout is not None
        key = None
        deadline = time.monotonic() + 90
        while key is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise RuntimeError("serve exited early")
            match = re.search(r"sandbox API key: (sk_test_\S+)", line)
            key = match.group(1) if match else None
        assert key, "serve prints a sandbox key"
        # Keep draining the pipe so that a chatty server never blocks on a full buffer.
        drain = threading.Thread(target=process.stdout.read, daemon=True)
        drain.start()
        _wait_for(f"http://127.0.0.1:{port}/readyz", process)
        yield f"http://127.0.0.1:{port}", key
    finally:
        _stop(process)
        if drain is not None:
            drain.join(timeout=10)  # the pipe ends with the process
        if process.stdout is not None:
            process.stdout.close()
    assert (tmp_path / "var" / "b2bscore.db").exists()


def test_embedded_default_scores_the_scenarios(embedded_service: tuple[str, str]) -> None:
    base_url, key = embedded_service
    _score_scenarios(base_url, key)


def test_postgres_redis_and_a_separate_sandbox(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The production-like setup: the sandbox and the API as two processes on PG + Redis."""
    sandbox_port, api_port = free_port(), free_port()
    env = _env(
        B2BSCORE_DATABASE_URL=postgres_url,
        B2BSCORE_REDIS_URL=redis_url,
        B2BSCORE_SANDBOX_URL=f"http://127.0.0.1:{sandbox_port}",
        B2BSCORE_VAR_DIR=str(tmp_path / "var"),
    )
    created = subprocess.run(
        [sys.executable, "-m", "b2bscore", "keys", "create", "--tenant", "e2e", "--mode", "test"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_test_")
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "sandbox", "--port", str(sandbox_port)],
        env=env,
        text=True,
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "serve", "--port", str(api_port), "--workers", "2"],
        env=env,
        cwd=tmp_path,
        text=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{sandbox_port}/healthz", sandbox)
        _wait_for(f"http://127.0.0.1:{api_port}/readyz", api)
        _score_scenarios(f"http://127.0.0.1:{api_port}", key)
        metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics").text
        assert "b2bscore_decisions_total" in metrics
        if sys.platform == "linux":
            _connections_reach_both_workers(api, api_port)
    finally:
        _stop(api)
        _stop(sandbox)


def _connections_reach_both_workers(api: subprocess.Popen[str], port: int) -> None:
    # Sixteen keep-alive clients connecting at once: with one shared listening socket the
    # first worker to wake took them all; with a listener per worker the kernel spreads
    # them (all 16 on one of two workers by chance: 2 in 65,536).
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
    try:
        deadline = time.monotonic() + 10
        held: dict[int, int] = {}
        while time.monotonic() < deadline:
            held = _connections_held(api.pid, port)
            if sum(held.values()) >= len(clients):
                break
            time.sleep(0.1)
        assert sum(held.values()) >= len(clients), held
        assert sum(1 for count in held.values() if count > 0) == 2, held
    finally:
        for client in clients:
            client.close()


def _connections_held(parent: int, port: int) -> dict[int, int]:
    """Established connections on port held by each child process of parent (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    held: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rsplit(")", 1)[1].split()
            if int(after_name[1]) != parent:  # the field after the state is the parent pid
                continue
            links = [os.readlink(fd) for fd in (stat.parent / "fd").iterdir()]
        except OSError:
            continue  # the process ended meanwhile
        pid = int(stat.parent.name)
        held[pid] = sum(1 for link in links if link.removeprefix("socket:[")[:-1] in inodes)
    return held
