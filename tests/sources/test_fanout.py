"""The fan-out: statuses, the deadline, the cache (real Redis), metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from b2bscore.kit.cache import Cache, RedisCache, create_cache
from b2bscore.kit.packed import pack_json
from b2bscore.sources import cache as cache_module
from b2bscore.sources.cache import ABSENT_FRESHNESS_SECONDS, SourceCache, cache_key
from b2bscore.sources.clients import ProviderClients, sandbox_consent_token
from b2bscore.sources.fanout import gather_sources
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import (
    AccountingData,
    BankData,
    RegistryData,
    SourceBundle,
    SourceName,
    SourceStatus,
)
from tests.servers import free_port
from tests.sources import fake_providers as fp
from tests.sources import payloads

AS_OF = date(2026, 1, 31)
TOKENIZER = Tokenizer(b"k" * 32)
OK, TIMEOUT, ERROR, UNAVAILABLE, CACHED = (
    SourceStatus.OK,
    SourceStatus.TIMEOUT,
    SourceStatus.ERROR,
    SourceStatus.UNAVAILABLE,
    SourceStatus.CACHED,
)


async def _gather(
    siren: str,
    clients: ProviderClients | None,
    *,
    budget_s: float = 2.0,
    cache: Cache | None = None,
    namespace: str = "test",
) -> SourceBundle:
    return await gather_sources(
        siren,
        clients,
        deadline=time.monotonic() + budget_s,
        cache=cache,
        tokenizer=TOKENIZER,
        as_of=AS_OF,
        cache_namespace=namespace,
    )


def _statuses(bundle: SourceBundle) -> tuple[SourceStatus, SourceStatus, SourceStatus]:
    return bundle.open_banking.status, bundle.accounting.status, bundle.registry.status


def _count(source: str, status: str) -> float:
    labels = {"source": source, "status": status}
    return REGISTRY.get_sample_value("b2bscore_source_status_total", labels) or 0.0


async def test_all_sources_ok(fake_clients: ProviderClients) -> None:
    before = _count("registry", "ok")
    bundle = await _gather(fp.OK, fake_clients)
    assert _statuses(bundle) == (OK, OK, OK)
    assert isinstance(bundle.bank, BankData)
    assert isinstance(bundle.books, AccountingData)
    assert isinstance(bundle.record, RegistryData)
    assert not bundle.degraded
    for result in bundle.all():
        assert result.as_of == AS_OF
        assert result.latency_ms > 0
        assert result.raw
        assert result.detail is None
    assert set(bundle.open_banking.raw) == {"accounts", "balances", "transactions"}
    assert set(bundle.registry.raw) == {"sirene", "bodacc"}
    assert set(bundle.accounting.raw) == {"fec"}
    assert _count("registry", "ok") == before + 1


async def test_deadline_is_never_exceeded(fake_clients: ProviderClients) -> None:
    budget = 0.3
    started = time.monotonic()
    bundle = await _gather(fp.ALL_HANG, fake_clients, budget_s=budget)
    elapsed = time.monotonic() - started
    assert elapsed < budget + 0.03
    assert _statuses(bundle) == (TIMEOUT, TIMEOUT, TIMEOUT)
    assert all(r.detail == "deadline" and r.data is None for r in bundle.all())
    assert all(r.latency_ms >= budget * 1000 * 0.9 for r in bundle.all())


async def test_one_slow_source_does_not_hold_the_others(fake_clients: ProviderClients) -> None:
    started = time.monotonic()
    bundle = await _gather(fp.BANK_HANG, fake_clients, budget_s=0.3)
    assert time.monotonic() - started < 0.33
    assert _statuses(bundle) == (TIMEOUT, OK, OK)
    assert bundle.degraded
    assert bundle.bank is None
    assert bundle.books is not None


async def test_a_past_deadline_times_everything_out(fake_clients: ProviderClients) -> None:
    bundle = await _gather(fp.OK, fake_clients, budget_s=-1.0)
    assert _statuses(bundle) == (TIMEOUT, TIMEOUT, TIMEOUT)


@pytest.mark.parametrize(
    ("siren", "expected", "detail"),
    [
        (fp.NO_CONSENT, (UNAVAILABLE, OK, OK), "consent_missing"),
        (fp.BANK_TRUNCATED, (ERROR, OK, OK), "page 2"),
        (fp.BANK_FOREIGN_LINK, (ERROR, OK, OK), "foreign"),
        (fp.NO_BOOKS, (OK, UNAVAILABLE, OK), "not_found"),
        (fp.BOOKS_MALFORMED, (OK, ERROR, OK), "invalid json"),
        (fp.BOOKS_UNBALANCED, (OK, ERROR, OK), "unbalanced"),
        (fp.SIRENE_DOWN, (OK, OK, ERROR), "http 503"),
        (fp.UNKNOWN, (OK, UNAVAILABLE, UNAVAILABLE), "404"),
    ],
)
async def test_faults_become_statuses(
    fake_clients: ProviderClients,
    siren: str,
    expected: tuple[SourceStatus, ...],
    detail: str,
) -> None:
    bundle = await _gather(siren, fake_clients)
    assert _statuses(bundle) == expected
    failed = [r for r in bundle.all() if r.status != OK]
    assert any(detail in (r.detail or "") for r in failed)
    assert all(r.data is None for r in failed)


async def test_unbalanced_books_keep_their_raw_payload(fake_clients: ProviderClients) -> None:
    bundle = await _gather(fp.BOOKS_UNBALANCED, fake_clients)
    assert bundle.accounting.status == ERROR
    assert "fec" in bundle.accounting.raw  # the audit keeps what was received


async def test_bodacc_down_leaves_registry_ok(fake_clients: ProviderClients) -> None:
    bundle = await _gather(fp.BODACC_DOWN, fake_clients)
    assert bundle.registry.status == OK
    assert bundle.record is not None
    assert bundle.record.announcements == ()
    assert "bodacc" in (bundle.registry.detail or "")


async def test_a_garbled_bodacc_record_is_dropped_counted_and_never_fatal(
    fake_clients: ProviderClients,
) -> None:
    bundle = await _gather(fp.BODACC_GARBLED, fake_clients)
    assert bundle.registry.status == OK
    assert bundle.record is not None
    assert [a.family for a in bundle.record.announcements] == ["collective"]
    assert bundle.record.ongoing_proceeding is True  # read from the jugement object
    assert bundle.registry.detail == (
        "bodacc: 1 malformed record(s) dropped (dateparution: missing or not a date)"
    )


async def test_missing_providers_and_consent_are_unavailable(fake_url: str) -> None:
    clients = ProviderClients(open_banking=None, sirene=None, bodacc=None, accounting=None)
    bundle = await _gather(fp.OK, clients)
    assert _statuses(bundle) == (UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    assert bundle.accounting.detail == "not configured"


async def test_no_clients_at_all_is_unavailable() -> None:
    bundle = await _gather(fp.OK, None)
    assert _statuses(bundle) == (UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    assert bundle.registry.detail == "not configured"


async def test_no_consent_token_is_unavailable(fake_clients: ProviderClients) -> None:
    fake_clients.consent_token = lambda siren: None
    bundle = await _gather(fp.OK, fake_clients)
    assert bundle.open_banking.status == UNAVAILABLE
    assert bundle.open_banking.detail == "no consent"


async def test_unexpected_exception_is_contained(fake_clients: ProviderClients) -> None:
    def broken(siren: str) -> str | None:
        raise RuntimeError("consent store down")

    fake_clients.consent_token = broken
    bundle = await _gather(fp.OK, fake_clients)
    assert bundle.open_banking.status == ERROR
    assert bundle.open_banking.detail == "internal: RuntimeError"
    assert bundle.accounting.status == OK


async def test_invalid_siren_asks_nobody(fake_clients: ProviderClients, hits: Any) -> None:
    bundle = await _gather("12345/../", fake_clients)
    assert _statuses(bundle) == (UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    assert not any(siren == "12345/../" for _, siren in hits)


async def test_cancelling_the_request_cancels_the_sources(fake_clients: ProviderClients) -> None:
    before = set(asyncio.all_tasks())
    task = asyncio.create_task(_gather(fp.ALL_HANG, fake_clients, budget_s=5.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(asyncio.all_tasks()) - before <= {asyncio.current_task()}


# --- cache --------------------------------------------------------------------------------


@pytest.fixture
async def redis_cache(redis_url: str) -> AsyncIterator[Cache]:
    """The kit cache on the real test Redis."""
    cache = create_cache(redis_url)
    yield cache
    await cache.close()


async def test_second_call_is_cached_and_faster(
    fake_clients: ProviderClients, redis_cache: Cache, hits: Any
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    first = await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace)
    calls = sum(n for (_, siren), n in hits.items() if siren == fp.OK)
    second = await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace)
    assert _statuses(first) == (OK, OK, OK)
    assert _statuses(second) == (CACHED, CACHED, CACHED)
    assert sum(n for (_, siren), n in hits.items() if siren == fp.OK) == calls  # no fetch
    for a, b in zip(first.all(), second.all(), strict=True):
        assert b.data == a.data
        assert b.raw == a.raw
        assert b.as_of == a.as_of
    assert second.open_banking.latency_ms < first.open_banking.latency_ms
    assert not second.degraded


async def test_namespaces_do_not_share(fake_clients: ProviderClients, redis_cache: Cache) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace)
    other = await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace + "-b")
    assert _statuses(other) == (OK, OK, OK)


async def test_absence_is_cached_and_said_so(
    fake_clients: ProviderClients, redis_cache: Cache, redis_url: str, hits: Any
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    before = hits["accounting", fp.NO_BOOKS]
    first = await _gather(fp.NO_BOOKS, fake_clients, cache=redis_cache, namespace=namespace)
    second = await _gather(fp.NO_BOOKS, fake_clients, cache=redis_cache, namespace=namespace)
    assert first.accounting.status == second.accounting.status == UNAVAILABLE
    assert first.accounting.detail is not None
    assert second.accounting.detail == f"{first.accounting.detail} (cached)"
    assert hits["accounting", fp.NO_BOOKS] == before + 1
    # Absence is remembered for an hour at most, whatever the source's data freshness.
    client = aioredis.Redis.from_url(redis_url)
    try:
        ttl = await client.pttl(cache_key(namespace, SourceName.ACCOUNTING, fp.NO_BOOKS))
    finally:
        await client.aclose()
    assert 0 < ttl <= ABSENT_FRESHNESS_SECONDS * 1000


async def test_failures_are_not_cached(
    fake_clients: ProviderClients, redis_cache: Cache, hits: Any
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    before = hits["accounting", fp.BOOKS_MALFORMED]
    for _ in range(2):
        bundle = await _gather(
            fp.BOOKS_MALFORMED, fake_clients, cache=redis_cache, namespace=namespace
        )
        assert bundle.accounting.status == ERROR
    assert hits["accounting", fp.BOOKS_MALFORMED] == before + 2


async def test_cached_values_are_sealed(
    fake_clients: ProviderClients, redis_cache: Cache, redis_url: str
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace)
    client = aioredis.Redis.from_url(redis_url)
    try:
        stored = await client.get(cache_key(namespace, SourceName.OPEN_BANKING, fp.OK))
        ttl = await client.pttl(cache_key(namespace, SourceName.OPEN_BANKING, fp.OK))
    finally:
        await client.aclose()
    assert isinstance(stored, bytes)
    assert b"FR76" not in stored
    assert b"3000 6000" not in stored
    assert fp.OK.encode() not in stored
    assert 0 < ttl <= 5 * 60 * 1000
    # Under another key (another company, another tenant) the value does not open.
    source_cache = SourceCache(redis_cache, TOKENIZER)
    await redis_cache.set(cache_key(namespace, SourceName.OPEN_BANKING, "999999999"), stored, 60)
    assert await source_cache.get(namespace, SourceName.OPEN_BANKING, "999999999") is None
    assert await source_cache.get(namespace, SourceName.OPEN_BANKING, fp.OK) is not None


async def test_freshness_is_per_source_and_overridable(redis_cache: Cache) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    source_cache = SourceCache(redis_cache, TOKENIZER, {SourceName.REGISTRY: 0.05})
    raw = {"sirene": payloads.sirene(), "bodacc": None}
    await source_cache.put(namespace, SourceName.REGISTRY, "111111118", pack_json(raw), AS_OF)
    hit = await source_cache.get(namespace, SourceName.REGISTRY, "111111118")
    assert hit is not None
    assert hit.raw() == raw
    assert hit.as_of == AS_OF
    assert hit.fetched_at.tzinfo is not None
    await asyncio.sleep(0.1)
    assert await source_cache.get(namespace, SourceName.REGISTRY, "111111118") is None
    assert source_cache.freshness_seconds[SourceName.ACCOUNTING] == 24 * 3600


async def test_a_dead_cache_degrades_to_fetching(fake_clients: ProviderClients) -> None:
    # A real Redis client pointed at a port nobody listens on: every call fails.
    dead = RedisCache(f"redis://127.0.0.1:{free_port()}/0")
    try:
        bundle = await _gather(fp.OK, fake_clients, cache=dead, namespace="dead")
    finally:
        await dead.close()
    assert _statuses(bundle) == (OK, OK, OK)


async def test_unreadable_cache_value_is_a_miss(
    fake_clients: ProviderClients, redis_cache: Cache
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    await redis_cache.set(cache_key(namespace, SourceName.ACCOUNTING, fp.OK), b"garbage", 60)
    bundle = await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace)
    assert bundle.accounting.status == OK


async def test_a_fresh_record_held_in_process_needs_no_round_trip(
    redis_cache: Cache, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    source_cache = SourceCache(redis_cache, TOKENIZER)
    raw = {"sirene": payloads.sirene(), "bodacc": None}
    await source_cache.put(namespace, SourceName.REGISTRY, "111111118", pack_json(raw), AS_OF)
    # Gone from the shared cache, still within its freshness here: served from memory,
    # exactly as the shared cache would have served it until its TTL.
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(cache_key(namespace, SourceName.REGISTRY, "111111118"))
    finally:
        await client.aclose()
    hit = await source_cache.get(namespace, SourceName.REGISTRY, "111111118")
    assert hit is not None
    assert hit.raw() == raw
    # A reader with a shorter freshness finds it stale and asks the shared cache: a miss.
    strict = SourceCache(redis_cache, TOKENIZER, {SourceName.REGISTRY: 0.0})
    assert await strict.get(namespace, SourceName.REGISTRY, "111111118") is None
    # Past the local trust window the purge of the shared cache is seen by every reader.
    monkeypatch.setattr(cache_module, "LOCAL_TRUST_SECONDS", 0.0)
    assert await source_cache.get(namespace, SourceName.REGISTRY, "111111118") is None


async def test_our_own_conditions_are_not_remembered_as_absence(
    fake_clients: ProviderClients, redis_cache: Cache
) -> None:
    # No consent token on our side (nothing was asked): a consent granted a second later
    # must be used at once, so nothing is cached.
    namespace = f"test-{uuid.uuid4().hex}"
    fake_clients.consent_token = lambda siren: None
    first = await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace)
    assert first.open_banking.detail == "no consent"
    fake_clients.consent_token = sandbox_consent_token
    second = await _gather(fp.OK, fake_clients, cache=redis_cache, namespace=namespace)
    assert second.open_banking.status == OK


async def test_the_provider_saying_no_consent_is_remembered(
    fake_clients: ProviderClients, redis_cache: Cache
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    first = await _gather(fp.NO_CONSENT, fake_clients, cache=redis_cache, namespace=namespace)
    second = await _gather(fp.NO_CONSENT, fake_clients, cache=redis_cache, namespace=namespace)
    assert first.open_banking.status == second.open_banking.status == UNAVAILABLE
    assert second.open_banking.detail == f"{first.open_banking.detail} (cached)"
