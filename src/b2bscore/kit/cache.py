"""The small key-value interface the service needs, on Redis or in process.

Source caching, idempotency and rate limits all go through `Cache`. Production uses
Redis so that several processes share it; the embedded default keeps it in process.
When Redis stops answering, `FallbackCache` carries on in process and reports it, so that
scoring goes on (without shared cache) and /readyz can say so.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from b2bscore.kit.logging import throttle

log = logging.getLogger(__name__)


class Cache(Protocol):
    """Key-value store with expiry, atomic claims and fixed-window counters."""

    async def get(self, key: str) -> bytes | None:
        """The value under key, or None."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store value under key for ttl_seconds."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Store value only if key is free; True when this call claimed it."""
        ...

    async def delete(self, key: str) -> None:
        """Forget key."""
        ...

    async def incr_window(self, key: str, window_seconds: int) -> tuple[int, float]:
        """Count one hit in the current window; returns (hits so far, seconds left)."""
        ...

    async def incr_window_unless(
        self, marker: str, key: str, window_seconds: int
    ) -> tuple[int, float] | None:
        """None when marker exists, else count one hit as `incr_window` does."""
        ...

    async def ping(self) -> bool:
        """True when the backing store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def fixed_window(key: str, window_seconds: int) -> tuple[str, float]:
    """The counter key of the current wall-clock window of key, and the seconds it has left."""
    now = time.time()
    window_start = math.floor(now / window_seconds) * window_seconds
    return f"{key}:{window_start}", window_start + window_seconds - now


class MemoryCache:
    """In-process implementation with expiry and a bounded size (LRU eviction)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._max_entries = max_entries

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires_at = item
        if expires_at <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def _put(self, key: str, value: bytes, ttl_seconds: float, now: float) -> None:
        self._data[key] = (value, now + ttl_seconds)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        """The value under key, or None."""
        return self._live(key, time.monotonic())

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store value under key for ttl_seconds."""
        self._put(key, value, ttl_seconds, time.monotonic())

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Store value only if key is free; True when this call claimed it."""
        now = time.monotonic()
        if self._live(key, now) is not None:
            return False
        self._put(key, value, ttl_seconds, now)
        return True

    async def delete(self, key: str) -> None:
        """Forget key."""
        self._data.pop(key, None)

    async def incr_window(self, key: str, window_seconds: int) -> tuple[int, float]:
        """Count one hit in the current fixed window."""
        window_key, seconds_left = fixed_window(key, window_seconds)
        current = self._live(window_key, time.monotonic())
        hits = (int(current) if current else 0) + 1
        self._put(window_key, str(hits).encode(), window_seconds, time.monotonic())
        return hits, seconds_left

    async def incr_window_unless(
        self, marker: str, key: str, window_seconds: int
    ) -> tuple[int, float] | None:
        """None when marker exists, else count one hit in the current fixed window."""
        if self._live(marker, time.monotonic()) is not None:
            return None
        return await self.incr_window(key, window_seconds)

    async def ping(self) -> bool:
        """Always answers."""
        return True

    async def close(self) -> None:
        """Nothing to release."""
        self._data.clear()


_COUNT_HIT_LUA = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return hits
"""
# The same count behind a marker check: a request from a cached principal asks "revoked?"
# and "how many hits?" in one round trip, the only shared-cache trip of a warm request.
# Two keys in one script need one Redis node (or both keys in one Cluster hash slot): the
# service talks to a single Redis (or a primary with replicas), never to a Cluster.
_COUNT_HIT_UNLESS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local hits = redis.call('INCR', KEYS[2])
if hits == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return hits
"""


class RedisCache:
    """Redis implementation shared by every process of the service."""

    def __init__(self, url: str) -> None:
        # Short timeouts: a slow Redis must cost a request milliseconds, not its budget.
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=0.2, socket_connect_timeout=0.25, health_check_interval=0
        )

        # One EVALSHA per hit instead of a MULTI/INCR/EXPIRE/EXEC transaction: same
        # atomicity, one command for the client to build and parse on every request.
        self._count_hit = self._redis.register_script(_COUNT_HIT_LUA)
        self._count_hit_unless = self._redis.register_script(_COUNT_HIT_UNLESS_LUA)

    @property
    def client(self) -> aioredis.Redis:
        """The underlying client, for callers that need a Redis-only feature."""
        return self._redis

    async def get(self, key: str) -> bytes | None:
        """The value under key, or None."""
        value = await self._redis.get(key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store value under key for ttl_seconds."""
        await self._redis.set(key, value, px=max(1, int(ttl_seconds * 1000)))

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Store value only if key is free (SET NX)."""
        return bool(await self._redis.set(key, value, px=max(1, int(ttl_seconds * 1000)), nx=True))

    async def delete(self, key: str) -> None:
        """Forget key."""
        await self._redis.delete(key)

    async def incr_window(self, key: str, window_seconds: int) -> tuple[int, float]:
        """Count one hit in the current fixed window, atomically across processes."""
        window_key, seconds_left = fixed_window(key, window_seconds)
        hits = await self._count_hit(keys=[window_key], args=[window_seconds + 1])
        return int(hits), seconds_left

    async def incr_window_unless(
        self, marker: str, key: str, window_seconds: int
    ) -> tuple[int, float] | None:
        """None when marker exists, else count one hit; one EVALSHA either way."""
        window_key, seconds_left = fixed_window(key, window_seconds)
        hits = int(
            await self._count_hit_unless(keys=[marker, window_key], args=[window_seconds + 1])
        )
        return None if hits < 0 else (hits, seconds_left)

    async def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


# After a Redis failure, how long requests go straight to the in-process cache before one
# of them tries Redis again. A stalled Redis (SIGSTOP, a full network buffer) costs the
# socket timeout per call: without this pause every call of every request would pay it.
RETRY_PRIMARY_SECONDS = 1.0


class FallbackCache:
    """Redis first; on a Redis failure, the in-process cache, so requests go on.

    After a failure Redis is left alone for RETRY_PRIMARY_SECONDS, then one call tries it
    again (the others keep to the fallback meanwhile): a stalled Redis costs one request
    its socket timeout (200 ms) per second, never every request.
    """

    def __init__(self, primary: RedisCache, fallback: MemoryCache | None = None) -> None:
        self.primary = primary
        self.fallback = fallback or MemoryCache()
        self.degraded = False
        self._skip_until = 0.0

    def _use_primary(self) -> bool:
        if not self.degraded:
            return True
        now = time.monotonic()
        if now < self._skip_until:
            return False
        self._skip_until = now + RETRY_PRIMARY_SECONDS  # this call is the one probe
        return True

    def _failed(self, error: Exception) -> None:
        throttle.log(
            log,
            logging.WARNING,
            "redis_unavailable",
            "redis unavailable, using the in-process cache: %s",
            type(error).__name__,
        )
        self.degraded = True
        self._skip_until = time.monotonic() + RETRY_PRIMARY_SECONDS

    async def get(self, key: str) -> bytes | None:
        """The value under key, or None."""
        if not self._use_primary():
            return await self.fallback.get(key)
        try:
            value = await self.primary.get(key)
            self.degraded = False
            return value
        except (RedisError, OSError) as error:
            self._failed(error)
            return await self.fallback.get(key)

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store value under key for ttl_seconds."""
        if not self._use_primary():
            await self.fallback.set(key, value, ttl_seconds)
            return
        try:
            await self.primary.set(key, value, ttl_seconds)
        except (RedisError, OSError) as error:
            self._failed(error)
            await self.fallback.set(key, value, ttl_seconds)

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Store value only if key is free; True when this call claimed it."""
        if not self._use_primary():
            return await self.fallback.set_if_absent(key, value, ttl_seconds)
        try:
            return await self.primary.set_if_absent(key, value, ttl_seconds)
        except (RedisError, OSError) as error:
            self._failed(error)
            return await self.fallback.set_if_absent(key, value, ttl_seconds)

    async def delete(self, key: str) -> None:
        """Forget key."""
        if not self._use_primary():
            await self.fallback.delete(key)
            return
        try:
            await self.primary.delete(key)
        except (RedisError, OSError) as error:
            self._failed(error)
        await self.fallback.delete(key)

    async def incr_window(self, key: str, window_seconds: int) -> tuple[int, float]:
        """Count one hit; per process while Redis is down."""
        if not self._use_primary():
            return await self.fallback.incr_window(key, window_seconds)
        try:
            counted = await self.primary.incr_window(key, window_seconds)
            self.degraded = False
            return counted
        except (RedisError, OSError) as error:
            self._failed(error)
            return await self.fallback.incr_window(key, window_seconds)

    async def incr_window_unless(
        self, marker: str, key: str, window_seconds: int
    ) -> tuple[int, float] | None:
        """Marker check and count in one trip; per process while Redis is down."""
        if not self._use_primary():
            return await self.fallback.incr_window_unless(marker, key, window_seconds)
        try:
            counted = await self.primary.incr_window_unless(marker, key, window_seconds)
            self.degraded = False
            return counted
        except (RedisError, OSError) as error:
            self._failed(error)
            return await self.fallback.incr_window_unless(marker, key, window_seconds)

    async def ping(self) -> bool:
        """True when Redis answers; the fallback keeps the service up either way."""
        ok = await self.primary.ping()
        if ok:
            self.degraded = False
        else:
            self._failed(ConnectionError("no answer to PING"))
        return ok

    async def close(self) -> None:
        """Close both stores."""
        await self.primary.close()
        await self.fallback.close()


def create_cache(redis_url: str | None) -> Cache:
    """Redis with an in-process fallback when a URL is given, else the in-process cache."""
    if redis_url:
        return FallbackCache(RedisCache(redis_url))
    return MemoryCache()
