"""The adapters against the sandbox over real HTTP, on every scenario SIREN."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from b2bscore.kit.cache import Cache, create_cache
from b2bscore.kit.settings import Settings
from b2bscore.sandbox.stet import dialect_of
from b2bscore.sandbox.wire import render_company
from b2bscore.sources import accounting, open_banking, registry
from b2bscore.sources.clients import ProviderClients
from b2bscore.sources.fanout import gather_sources
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import SourceBundle, SourceStatus
from b2bscore.training.world import SCENARIOS, company

TOKENIZER = Tokenizer(b"sandbox-test-key-0123456789")
OK, CACHED, TIMEOUT, ERROR, UNAVAILABLE = (
    SourceStatus.OK,
    SourceStatus.CACHED,
    SourceStatus.TIMEOUT,
    SourceStatus.ERROR,
    SourceStatus.UNAVAILABLE,
)
HEALTHY = SCENARIOS["healthy"]
THIN_FILE = SCENARIOS["thin_file_startup"]
CASH_STRAPPED = SCENARIOS["cash_strapped"]
COLLECTIVE = SCENARIOS["collective_proceedings"]
CLOSED = SCENARIOS["closed_company"]
BANK_TIMEOUT = SCENARIOS["bank_timeout"]
REGISTRY_ERROR = SCENARIOS["registry_error"]
ACCOUNTING_MALFORMED = SCENARIOS["accounting_malformed"]
BANK_TRUNCATED = SCENARIOS["bank_truncated"]
NO_BANK_CONSENT = SCENARIOS["no_bank_consent"]


@pytest.fixture
async def sandbox_clients(sandbox_url: str) -> AsyncIterator[ProviderClients]:
    """Provider clients on the sandbox, closed after the test."""
    clients = ProviderClients.sandbox(sandbox_url, Settings())
    yield clients
    await clients.aclose()


async def _gather(
    siren: str,
    clients: ProviderClients,
    *,
    budget_s: float = 5.0,
    cache: Cache | None = None,
    namespace: str = "sandbox-test",
) -> SourceBundle:
    return await gather_sources(
        siren,
        clients,
        deadline=time.monotonic() + budget_s,
        cache=cache,
        tokenizer=TOKENIZER,
        as_of=datetime.now(UTC).date(),
        cache_namespace=namespace,
    )


def _statuses(bundle: SourceBundle) -> tuple[SourceStatus, SourceStatus, SourceStatus]:
    return bundle.open_banking.status, bundle.accounting.status, bundle.registry.status


@pytest.mark.parametrize(
    ("siren", "expected"),
    [
        (HEALTHY, (OK, OK, OK)),
        (CASH_STRAPPED, (OK, OK, OK)),
        (COLLECTIVE, (OK, OK, OK)),
        (CLOSED, (OK, OK, OK)),
        (THIN_FILE, (OK, UNAVAILABLE, OK)),
        (REGISTRY_ERROR, (OK, OK, ERROR)),
        (ACCOUNTING_MALFORMED, (OK, ERROR, OK)),
        (BANK_TRUNCATED, (ERROR, OK, OK)),
        (NO_BANK_CONSENT, (UNAVAILABLE, OK, OK)),
    ],
)
async def test_scenarios(
    sandbox_clients: ProviderClients,
    siren: str,
    expected: tuple[SourceStatus, ...],
) -> None:
    bundle = await _gather(siren, sandbox_clients)
    for result, want in zip(bundle.all(), expected, strict=True):
        assert result.status == want, (result.name, result.detail)


async def test_healthy_company_in_full(sandbox_clients: ProviderClients) -> None:
    bundle = await _gather(HEALTHY, sandbox_clients)
    assert not bundle.degraded
    assert bundle.bank is not None
    assert bundle.books is not None
    assert bundle.record is not None
    assert all(a.transactions for a in bundle.bank.accounts)
    assert bundle.books.statements
    assert bundle.record.active


async def test_collective_proceedings_are_read(sandbox_clients: ProviderClients) -> None:
    bundle = await _gather(COLLECTIVE, sandbox_clients)
    assert bundle.record is not None
    assert any(a.family == "collective" and a.nature for a in bundle.record.announcements), (
        bundle.record.announcements
    )


async def test_closed_company_is_inactive(sandbox_clients: ProviderClients) -> None:
    bundle = await _gather(CLOSED, sandbox_clients)
    assert bundle.record is not None
    assert bundle.record.active is False


async def test_bank_timeout_within_budget(sandbox_clients: ProviderClients) -> None:
    budget = 0.3
    started = time.monotonic()
    bundle = await _gather(BANK_TIMEOUT, sandbox_clients, budget_s=budget)
    assert time.monotonic() - started < budget + 0.03
    assert bundle.open_banking.status == TIMEOUT
    assert bundle.open_banking.detail == "deadline"
    assert bundle.accounting.status == OK
    assert bundle.registry.status == OK


@pytest.fixture
async def redis_cache(redis_url: str) -> AsyncIterator[Cache]:
    """The kit cache on the real test Redis."""
    cache = create_cache(redis_url)
    yield cache
    await cache.close()


async def test_second_call_is_cached_and_faster(
    sandbox_clients: ProviderClients, redis_cache: Cache
) -> None:
    namespace = f"sandbox-{uuid.uuid4().hex}"
    started = time.perf_counter()
    first = await _gather(HEALTHY, sandbox_clients, cache=redis_cache, namespace=namespace)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = await _gather(HEALTHY, sandbox_clients, cache=redis_cache, namespace=namespace)
    second_s = time.perf_counter() - started
    assert _statuses(first) == (OK, OK, OK)
    assert _statuses(second) == (CACHED, CACHED, CACHED)
    assert second_s < first_s
    assert second.bank == first.bank
    assert second.books == first.books
    assert second.record == first.record


@pytest.mark.parametrize("siren", [HEALTHY, CASH_STRAPPED, COLLECTIVE, CLOSED, THIN_FILE])
async def test_parity_between_rendered_and_fetched(
    sandbox_clients: ProviderClients, siren: str
) -> None:
    """Training parses render_company in process; serving fetches over HTTP: same data."""
    as_of = datetime.now(UTC).date()
    rendered = render_company(company(siren), as_of)
    bank = sandbox_clients.bank_client(siren)
    assert bank is not None
    assert bank.bank.id == f"sandbox-{dialect_of(siren)}"
    assert sandbox_clients.sirene is not None
    assert sandbox_clients.accounting is not None

    bank_raw = await open_banking.fetch_open_banking(bank, f"sandbox-{siren}")
    # Pages differ only in their own links, which carry the dateFrom the client sent.
    assert bank_raw["accounts"] == rendered["open_banking"]["accounts"]
    assert bank_raw["balances"] == rendered["open_banking"]["balances"]
    assert open_banking.parse_raw(bank_raw, TOKENIZER, as_of) == open_banking.parse_raw(
        rendered["open_banking"], TOKENIZER, as_of
    )

    registry_raw = await registry.fetch_registry(
        sandbox_clients.sirene, sandbox_clients.bodacc, siren
    )
    assert registry.parse_raw(registry_raw, as_of) == registry.parse_raw(
        rendered["registry"], as_of
    )

    if rendered["accounting"] is None:
        return
    books_raw = await accounting.fetch_accounting(sandbox_clients.accounting, siren)
    assert accounting.parse_raw(books_raw, as_of) == accounting.parse_raw(
        rendered["accounting"], as_of
    )


_AGGREGATES = (
    "revenue", "ebitda", "ebit", "net_income", "total_assets", "current_assets",
    "current_liabilities", "total_liabilities", "equity", "retained_earnings", "cash",
    "financial_debt", "inventory", "receivables",
)  # fmt: skip


def test_pcg_mapping_agrees_with_the_world_and_every_payload_parses() -> None:
    """The world knows the aggregates its trial balances must yield: the adapter finds them."""
    from b2bscore.training.world import SCENARIOS, sample_sirens

    as_of = datetime(2026, 1, 31, tzinfo=UTC).date()
    statements = 0
    for siren in [*sample_sirens(60, seed=11), *SCENARIOS.values()]:
        truth = company(siren)
        rendered = render_company(truth, as_of)
        registry.parse_raw(rendered["registry"], as_of)
        if rendered["open_banking"] is not None:
            bank = open_banking.parse_raw(rendered["open_banking"], TOKENIZER, as_of)
            assert len(bank.accounts) == len(truth.accounts)
        if rendered["accounting"] is None:
            continue
        books = accounting.parse_raw(rendered["accounting"], as_of)
        assert len(books.statements) == len(truth.statements)
        for parsed, expected in zip(books.statements, truth.statements, strict=True):
            statements += 1
            for name in _AGGREGATES:
                assert getattr(parsed, name) == getattr(expected, name), (siren, name)
    assert statements > 60
