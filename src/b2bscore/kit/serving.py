"""Run the API under uvicorn with one listening socket per worker (SO_REUSEPORT, Linux).

uvicorn's multiprocess mode binds one socket in its parent process and every worker
accepts from it. The worker that wakes first takes a whole burst of connections, and
keep-alive clients (a load balancer's upstream pool, a lender's HTTP client) stay where
they landed: measured here, all 32 connections of a load generator went to one of two
workers, which ran at 100 % of a core while the other idled. With SO_REUSEPORT each
worker listens on a socket of its own and the kernel spreads new connections across
them by a hash of their addresses.

uvicorn's supervisor (health checks, restarts, signals) is kept. The parent only reserves
the port with a socket it never listens on; handed to a worker, that socket pickles as
"bind a listener of your own", so every worker the supervisor starts or restarts does.

The trade-offs of per-worker queues: a worker whose event loop stalls still receives its
share of new connections (the shared queue would have let another worker take them);
connections waiting in a worker's own queue when it exits are reset, unless
`net.ipv4.tcp_migrate_req=1` (Linux >= 5.14) hands them to the others.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any, ClassVar

import httptools
import orjson
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from b2bscore.kit.settings import get_settings

log = logging.getLogger("uvicorn.error")


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a request whose head is too large."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request line and headers bounded as they arrive.

    Neither uvicorn nor httptools bounds a request's head: httptools concatenates a header
    value chunk after chunk until its end, and uvicorn the request line, so one 100 MB
    header (no key needed, any route) took 100 MB and more of the server's memory before
    any ASGI code could see it. Here the bytes of the head are counted as they are
    received, before the parser sees them: past the limit the answer is 431 (414 for the
    request line) and the connection is closed. One addition and one comparison per
    received chunk; nothing per request beyond that.
    """

    # From the settings (B2BSCORE_MAX_REQUEST_LINE_BYTES, B2BSCORE_MAX_HEADER_BYTES) of
    # each worker process, read once; a subclass may fix them instead.
    max_request_line_bytes: ClassVar[int] = 0
    max_header_bytes: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if not cls.max_request_line_bytes:
            settings = get_settings()
            cls.max_request_line_bytes = settings.max_request_line_bytes
            cls.max_header_bytes = settings.max_header_bytes
        self._reading_head = True
        self._head_bytes = 0
        self._line_too_long = False

    def data_received(self, data: bytes) -> None:
        """Count the head's bytes, then parse (as uvicorn does)."""
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_request_line_bytes + self.max_header_bytes:
                self._refuse(431, "Request header fields too large")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._line_too_long:
                self._refuse(414, "URI too long")
                return
            self._invalid()
        except httptools.HttpParserError:
            self._invalid()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def on_message_begin(self) -> None:
        """A new request: its head is counted from here."""
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        """The request line, refused past its own limit."""
        if len(self.url) + len(url) > self.max_request_line_bytes:
            self._line_too_long = True
            raise _HeadRefused
        super().on_url(url)

    def on_headers_complete(self) -> None:
        """The head is whole: its bytes are no longer counted."""
        self._reading_head = False
        super().on_headers_complete()

    def _refuse(self, status: int, title: str) -> None:
        limit = (
            f"{self.max_request_line_bytes} bytes of request line"
            if status == 414
            else f"{self.max_header_bytes} bytes of headers"
        )
        code = "uri_too_long" if status == 414 else "headers_too_large"
        body = orjson.dumps(
            {
                "type": f"https://b2bscore.dev/problems/{code}",
                "title": title,
                "status": status,
                "code": code,
                "detail": f"A request may carry at most {limit}.",
            }
        )
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/problem+json\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
        self._reading_head = False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port in the port's SO_REUSEPORT group."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (so a start-up there will not fail to bind)."""
    # Bound without SO_REUSEPORT, so it fails while anything listens there, another
    # b2bscore included: two instances must not silently share one port.
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class _PortReservation(socket.socket):
    """The parent's bound socket; it never listens, so the kernel sends it no connection."""

    def __init__(self, host: str, port: int) -> None:
        bound = reuse_port_socket(host, port)
        super().__init__(bound.family, bound.type, bound.proto, fileno=bound.detach())
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        # multiprocessing pickles the supervisor's sockets into each worker it spawns.
        return (reuse_port_socket, (self.host, self.port))


def balanced_workers_supported() -> bool:
    """True where SO_REUSEPORT balances connections across sockets (Linux)."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def run(app: str, **options: Any) -> None:
    """uvicorn.run(app, **options), with a listener per worker where the kernel balances.

    A failed start-up exits non-zero whatever the worker count (SystemExit).
    """
    config = uvicorn.Config(app, **options)
    if config.workers <= 1 or config.should_reload:
        uvicorn.run(app, **options)  # exits with STARTUP_FAILURE itself when start-up fails
        return
    listener: socket.socket
    if (
        balanced_workers_supported()
        and not config.uds
        and config.fd is None
        and config.port != 0  # each worker would bind a port of its own
    ):
        if not port_is_free(config.host, config.port):
            log.error("%s:%d is already in use", config.host, config.port)
            sys.exit(STARTUP_FAILURE)
        listener = _PortReservation(config.host, config.port)
        log.info(
            "Uvicorn running on http://%s:%d with %d workers, a listener each",
            config.host,
            config.port,
            config.workers,
        )
    else:
        listener = config.bind_socket()  # uvicorn's one socket, shared by the workers
    supervisor = Multiprocess(config, sockets=[listener])
    try:
        supervisor.run()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    # uvicorn's supervisor stops when a worker fails before serving, then returns as after
    # a clean shutdown (uvicorn.run then exits 0): say it with the exit status instead.
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.exit(STARTUP_FAILURE)
