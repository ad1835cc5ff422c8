"""A real webhook receiver: an HTTP server in a thread that verifies Standard Webhooks
signatures with the `standardwebhooks` package and answers as a test scripts it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: dict[str, bool]  # secret label -> signature valid under it
    payload: Any
    answered: int
    at: float


@dataclass
class Script:
    """What the receiver answers: statuses in order (then `then`), an optional delay."""

    statuses: list[int] = field(default_factory=list)
    then: int = 200
    delay_seconds: float = 0.0
    location: str | None = None


class Receiver:
    """State shared between the server thread and the test."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.received: list[Received] = []
        self.script = Script()
        self.lock = threading.Lock()
        self.url = ""

    def next_status(self) -> int:
        with self.lock:
            if self.script.statuses:
                return self.script.statuses.pop(0)
            return self.script.then

    def record(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def ok(self) -> list[Received]:
        """The requests answered 2xx."""
        with self.lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Wait (without blocking the event loop the worker runs on) until predicate(self)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"receiver: condition not met in {timeout} s ({self.received!r})")


def _verify(secrets: dict[str, str], body: bytes, headers: dict[str, str]) -> dict[str, bool]:
    result = {}
    for label, secret in secrets.items():
        try:
            Webhook(secret).verify(body, headers)
            result[label] = True
        except WebhookVerificationError:
            result[label] = False
    return result


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 for the duration of the block."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            status = receiver.next_status()
            if receiver.script.delay_seconds:
                time.sleep(receiver.script.delay_seconds)
            import json

            receiver.record(
                Received(
                    path=self.path,
                    headers=headers,
                    body=body,
                    verified=_verify(dict(receiver.secrets), body, headers),
                    payload=json.loads(body) if body else None,
                    answered=status,
                    at=time.time(),
                )
            )
            try:
                self.send_response(status)
                if receiver.script.location and 300 <= status < 400:
                    self.send_header("Location", receiver.script.location)
                answer = b'{"received": true}' if status < 300 else b"nope " * 400
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
