"""The fixed-window counters of every Cache implementation, on real Redis where it applies."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from b2bscore.kit.cache import Cache, FallbackCache, MemoryCache, RedisCache

# Nothing listens here: every Redis call fails at once and the fallback takes over.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(params=["memory", "redis", "redis-down"])
async def cache(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Cache]:
    """One implementation per run: in process, Redis, and Redis falling back in process."""
    store: Cache
    if request.param == "memory":
        store = MemoryCache()
    elif request.param == "redis":
        store = FallbackCache(RedisCache(redis_url))
    else:
        store = FallbackCache(RedisCache(UNREACHABLE_REDIS))
    yield store
    await store.close()


async def test_hits_are_counted_in_the_window(cache: Cache) -> None:
    key = f"rl:{secrets.token_hex(6)}"
    counts = [(await cache.incr_window(key, 60))[0] for _ in range(3)]
    assert counts == [1, 2, 3]
    _, seconds_left = await cache.incr_window(key, 60)
    assert 0 < seconds_left <= 60


async def test_a_marker_refuses_the_count_without_counting(cache: Cache) -> None:
    key, marker = f"rl:{secrets.token_hex(6)}", f"revoked:{secrets.token_hex(6)}"
    first = await cache.incr_window_unless(marker, key, 60)
    assert first is not None
    assert first[0] == 1
    assert (await cache.incr_window(key, 60))[0] == 2  # one counter for both calls
    await cache.set(marker, b"1", 60)
    assert await cache.incr_window_unless(marker, key, 60) is None
    assert (await cache.incr_window(key, 60))[0] == 3  # the refused call did not count
