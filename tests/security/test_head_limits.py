"""The request line and headers are bounded as they arrive: 431 (414), and no memory spent.

The service runs as a real process under uvicorn with the protocol `b2bscore serve` uses,
so that its memory can be read from /proc and the bytes go through the real parser.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads the server's /proc")

_SERVE = (
    "from b2bscore.kit import serving; "
    "serving.run('b2bscore.app:create_app_from_env', factory=True, host='127.0.0.1', "
    "port={port}, http=serving.BoundedHttpToolsProtocol, log_level='warning')"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of the API served by uvicorn in a process of its own."""
    var_dir = tmp_path_factory.mktemp("var")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("B2BSCORE_")}
    env.update(
        B2BSCORE_VAR_DIR=str(var_dir),
        B2BSCORE_MODELS_DIR=os.environ.get("B2BSCORE_TEST_MODELS_DIR", str(REPO / "models")),
        B2BSCORE_UNAUTHENTICATED_RATE_LIMIT_PER_MINUTE="100000",
    )
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE.format(port=port)], env=env, cwd=var_dir
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the API did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_huge_head(url: str, head: bytes, filler: int, chunk: int = 1 << 20) -> tuple[bytes, int]:
    """Send head, then filler bytes of one header value; (what came back, bytes sent)."""
    port = int(url.rsplit(":", 1)[1])
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
            block = b"a" * chunk
            while sent < filler:
                sock.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: what it answered is already here
        sock.settimeout(5)
        try:
            while chunk_in := sock.recv(65536):
                answer += chunk_in
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent


@pytest.mark.parametrize("path", ["/healthz", "/v1/score", "/v1/decisions"])
def test_a_100_mb_header_is_431_and_costs_no_memory(served: tuple[str, int], path: str) -> None:
    url, pid = served
    before = _rss_bytes(pid)
    method = "POST" if path == "/v1/score" else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-Huge: ".encode()
    answer, sent = _send_huge_head(url, head, 100 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer
    assert b"headers_too_large" in answer
    assert sent < 100 * 1024 * 1024  # refused long before the end
    grown = _rss_bytes(pid) - before
    assert grown < 8 * 1024 * 1024, f"the server grew by {grown / 1e6:.1f} MB"
    # The server is fine afterwards.
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200


def test_many_headers_add_up_to_the_limit(served: tuple[str, int]) -> None:
    url, _ = served
    headers = {f"X-Filler-{i}": "v" * 1000 for i in range(30)}  # ~30 KiB in total
    response = httpx.get(f"{url}/healthz", headers=headers, timeout=5)
    assert response.status_code == 431


def test_a_long_request_line_is_414(served: tuple[str, int]) -> None:
    url, _ = served
    response = httpx.get(f"{url}/healthz?q={'x' * 9000}", timeout=5)
    assert response.status_code == 414
    assert response.json()["code"] == "uri_too_long"


def test_requests_within_the_limits_are_served(served: tuple[str, int]) -> None:
    url, _ = served
    headers = {f"X-Filler-{i}": "v" * 1000 for i in range(12)}  # ~12 KiB: allowed
    with httpx.Client(base_url=url, timeout=5) as client:
        # Several requests on one keep-alive connection: the count starts over each time.
        for _ in range(5):
            assert client.get("/healthz", headers=headers).status_code == 200
        assert client.get(f"/healthz?q={'x' * 7000}").status_code == 200
        missing_key = client.post("/v1/score", json={}, headers=headers)
        assert missing_key.status_code == 401
