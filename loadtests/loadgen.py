"""A small HTTP/1.1 load generator (asyncio streams, keep-alive), closed- or open-loop.

Used by benchmark.py to drive b2bscore and MLServer identically. It speaks just enough
HTTP/1.1 (Content-Length and chunked bodies) to stay far cheaper per request than httpx,
because it shares the machine's 2 cores with the servers it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MAX_IN_FLIGHT = 2_000  # open loop: beyond this the target has fallen over; count as drops
# uvicorn closes a keep-alive connection idle for 5 s; a client that reuses one after that
# reads an empty answer. Real clients drop such connections; so does the open loop.
REUSE_IDLE_S = 4.0


@dataclass
class Result:
    """What one run measured."""

    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    dropped: int = 0

    @property
    def ok(self) -> int:
        """Answers with status 200."""
        return self.statuses.get(200, 0)

    @property
    def rps(self) -> float:
        """200 answers per second over the measured window."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def pct(self, q: float, server: bool = False) -> float:
        """Nearest-rank percentile of latency in ms (q in 0..100)."""
        values = sorted(self.server_ms if server else self.latencies_ms)
        if not values:
            return math.nan
        return values[min(len(values), max(1, math.ceil(q / 100 * len(values)))) - 1]


def build_request(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """One raw HTTP/1.1 POST with keep-alive."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """Connect to host:port."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send a request, read the whole response: (status, body)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = -1
        chunked = False
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            return status, await self._chunked()
        return status, (await self.reader.readexactly(length)) if length > 0 else b""

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        for _ in range(100_000):  # a bound on chunks, far above any answer here
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        raise ValueError("too many chunks")

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(Exception):
            self.writer.close()


ServerLatency = Callable[[bytes], float | None]


async def closed_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 2.0,
    server_latency: ServerLatency | None = None,
    timeout_s: float = 10.0,
) -> Result:
    """`concurrency` connections each sending the next request as soon as one is answered."""
    feed = itertools.cycle(requests)
    t_start = time.perf_counter() + warmup_s
    t_end = t_start + duration_s
    result = Result(duration_s=duration_s)

    async def worker() -> None:
        conn: Connection | None = None
        while time.perf_counter() < t_end:
            try:
                if conn is None:
                    conn = await Connection.open(host, port)
                sent = time.perf_counter()
                status, body = await asyncio.wait_for(conn.exchange(next(feed)), timeout_s)
                done = time.perf_counter()
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                if time.perf_counter() >= t_start:
                    result.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.05)
                continue
            # Only what finishes inside the window counts, so rps is not inflated.
            if t_start <= done <= t_end:
                result.statuses[status] += 1
                if status == 200:
                    result.latencies_ms.append((done - sent) * 1000)
                    if server_latency is not None and (s := server_latency(body)) is not None:
                        result.server_ms.append(s)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration_s: float,
    warmup_s: float = 2.0,
    server_latency: ServerLatency | None = None,
    timeout_s: float = 10.0,
) -> Result:
    """Requests sent on a fixed schedule (`rate` per second), whatever the answers do.

    Latency counts from the scheduled send time, so a stalled server cannot hide its
    queueing (no coordinated omission).
    """
    feed = itertools.cycle(requests)
    idle: list[tuple[Connection, float]] = []  # with the time each was last answered on
    in_flight: set[asyncio.Task[None]] = set()
    result = Result(duration_s=duration_s)
    t0 = time.perf_counter()
    measure_from = t0 + warmup_s
    total = int((warmup_s + duration_s) * rate)

    def reusable() -> Connection | None:
        while idle:
            conn, last_used = idle.pop()
            if time.perf_counter() - last_used < REUSE_IDLE_S:
                return conn
            conn.close()
        return None

    async def one(scheduled: float, request: bytes) -> None:
        conn = reusable()
        try:
            if conn is None:
                conn = await Connection.open(host, port)
            status, body = await asyncio.wait_for(conn.exchange(request), timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            if scheduled >= measure_from:
                result.errors += 1
            if conn is not None:
                conn.close()
            return
        done = time.perf_counter()
        idle.append((conn, done))
        if scheduled >= measure_from:
            result.statuses[status] += 1
            if status == 200:
                result.latencies_ms.append((done - scheduled) * 1000)
                if server_latency is not None and (s := server_latency(body)) is not None:
                    result.server_ms.append(s)

    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_IN_FLIGHT:
            if scheduled >= measure_from:
                result.dropped += 1
            continue
        task = asyncio.create_task(one(scheduled, next(feed)))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=timeout_s + 1)
    for conn, _ in idle:
        conn.close()
    return result
