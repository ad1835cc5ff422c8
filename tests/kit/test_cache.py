"""The fixed-window counters of every Cache implementation, on real Redis where it applies."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from b2bscore.kit.cache import Cache, FallbackCache, MemoryCache, RedisCache, fixed_window

# Nothing listens here: every Redis call fails at once and the fallback takes over.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
# Mid-window, so that no test straddles the minute boundary of the fixed windows.
NOW = 1_800_000_030.0


@pytest.fixture(autouse=True)
def _mid_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("b2bscore.kit.cache.time.time", lambda: NOW)


@pytest.fixture(params=["memory", "redis", "redis-down"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    """One implementation per run: in process, Redis alone, Redis falling back in process."""
    store: Cache
    if request.param == "memory":
        store = MemoryCache()
    elif request.param == "redis":
        # Bare, not behind the fallback, which would hide a broken script.
        store = RedisCache(request.getfixturevalue("redis_url"))
    else:
        store = FallbackCache(RedisCache(UNREACHABLE_REDIS))
    yield store
    await store.close()


async def test_hits_are_counted_in_the_window(cache: Cache) -> None:
    key = f"rl:{secrets.token_hex(6)}"
    counts = [(await cache.incr_window(key, 60))[0] for _ in range(3)]
    assert counts == [1, 2, 3]
    _, seconds_left = await cache.incr_window(key, 60)
    assert seconds_left == 30.0


async def test_a_marker_refuses_the_count_without_counting(cache: Cache) -> None:
    key, marker = f"rl:{secrets.token_hex(6)}", f"revoked:{secrets.token_hex(6)}"
    first = await cache.incr_window_unless(marker, key, 60)
    assert first == (1, 30.0)
    assert (await cache.incr_window(key, 60))[0] == 2  # one counter for both calls
    await cache.set(marker, b"1", 60)
    assert await cache.incr_window_unless(marker, key, 60) is None
    assert (await cache.incr_window(key, 60))[0] == 3  # the refused call did not count


async def test_redis_expires_the_window_and_leaves_the_marker_alone(redis_url: str) -> None:
    store = RedisCache(redis_url)
    try:
        key, marker = f"rl:{secrets.token_hex(6)}", f"revoked:{secrets.token_hex(6)}"
        assert await store.incr_window_unless(marker, key, 60) == (1, 30.0)
        window_key, _ = fixed_window(key, 60)
        assert 0 < await store.client.ttl(window_key) <= 61
        assert await store.client.exists(marker) == 0  # only read, never created
        await store.set(marker, b"1", 300)
        assert await store.incr_window_unless(marker, key, 60) is None
        assert 290 < await store.client.ttl(marker) <= 300  # its expiry untouched
    finally:
        await store.close()
