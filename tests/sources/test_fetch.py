"""HTTP fetchers over real HTTP against the fault-injecting providers."""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from b2bscore.kit.settings import Settings
from b2bscore.sources import accounting, open_banking, registry
from b2bscore.sources.clients import ProviderClients, resolve_link
from b2bscore.sources.errors import SourceFormatError, SourceUnavailable, SourceUpstreamError
from b2bscore.sources.tokens import Tokenizer
from tests.servers import free_port
from tests.sources import fake_providers as fp

AS_OF = date(2026, 1, 31)
TOKENIZER = Tokenizer(b"k" * 32)


def _token(siren: str) -> str:
    return f"sandbox-{siren}"


async def test_open_banking_follows_every_page_of_every_account(
    fake_clients: ProviderClients,
) -> None:
    assert fake_clients.open_banking is not None
    raw = await open_banking.fetch_open_banking(fake_clients.open_banking, _token(fp.OK))
    main, second = f"{fp.OK}-main", f"{fp.OK}-2"
    assert set(raw) == {"accounts", "balances", "transactions"}
    assert [a["resourceId"] for a in raw["accounts"]["accounts"]] == [main, second]
    assert set(raw["balances"]) == set(raw["transactions"]) == {main, second}
    assert len(raw["transactions"][main]) == 3
    assert "next" not in raw["transactions"][main][-1]["_links"]
    assert len(raw["transactions"][second]) == 1
    data = open_banking.parse_raw(raw, TOKENIZER, AS_OF)
    assert [len(a.transactions) for a in data.accounts] == [6, 1]
    assert sum(t.amount for t in data.accounts[0].transactions) == 60 - 6


async def test_open_banking_without_consent_is_unavailable(fake_clients: ProviderClients) -> None:
    assert fake_clients.open_banking is not None
    with pytest.raises(SourceUnavailable, match="consent_missing"):
        await open_banking.fetch_open_banking(fake_clients.open_banking, _token(fp.NO_CONSENT))


async def test_open_banking_failing_next_page_is_an_upstream_error(
    fake_clients: ProviderClients,
) -> None:
    assert fake_clients.open_banking is not None
    with pytest.raises(SourceUpstreamError, match="page 2: http 500"):
        await open_banking.fetch_open_banking(fake_clients.open_banking, _token(fp.BANK_TRUNCATED))


async def test_open_banking_page_loop_stops_at_the_cap(fake_clients: ProviderClients) -> None:
    assert fake_clients.open_banking is not None
    with pytest.raises(SourceFormatError, match="more than 5 pages"):
        await open_banking.fetch_open_banking(
            fake_clients.open_banking, _token(fp.BANK_PAGE_LOOP), max_pages=5
        )


async def test_open_banking_refuses_links_to_another_origin(
    fake_clients: ProviderClients,
) -> None:
    assert fake_clients.open_banking is not None
    with pytest.raises(SourceFormatError, match="foreign origin"):
        await open_banking.fetch_open_banking(
            fake_clients.open_banking, _token(fp.BANK_FOREIGN_LINK)
        )


async def test_resolve_link_forms() -> None:
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9/stet/v1") as client:
        assert resolve_link(client, "/stet/v1/accounts/a/transactions?page=2") == (
            "http://127.0.0.1:9/stet/v1/accounts/a/transactions?page=2"
        )
        assert resolve_link(client, "accounts/a/transactions") == "accounts/a/transactions"
        absolute = "http://127.0.0.1:9/stet/v1/accounts/a/balances"
        assert resolve_link(client, absolute) == absolute
        with pytest.raises(SourceFormatError):
            resolve_link(client, "http://127.0.0.1:10/stet/v1/accounts")


async def test_registry_reads_sirene_and_bodacc(fake_clients: ProviderClients) -> None:
    assert fake_clients.sirene is not None
    raw = await registry.fetch_registry(fake_clients.sirene, fake_clients.bodacc, fp.OK)
    assert raw["sirene"]["uniteLegale"]["siren"] == fp.OK
    assert raw["bodacc"]["total_count"] == 2
    data = registry.parse_raw(raw, AS_OF)
    assert data.siren == fp.OK
    assert len(data.announcements) == 2


async def test_registry_with_bodacc_down_is_still_usable(fake_clients: ProviderClients) -> None:
    assert fake_clients.sirene is not None
    raw = await registry.fetch_registry(fake_clients.sirene, fake_clients.bodacc, fp.BODACC_DOWN)
    assert raw["bodacc"] is None
    assert registry.parse_raw(raw, AS_OF).announcements == ()


async def test_registry_without_bodacc_client(fake_clients: ProviderClients) -> None:
    assert fake_clients.sirene is not None
    raw = await registry.fetch_registry(fake_clients.sirene, None, fp.OK)
    assert raw["bodacc"] is None


async def test_registry_sirene_errors(fake_clients: ProviderClients) -> None:
    assert fake_clients.sirene is not None
    with pytest.raises(SourceUpstreamError, match="sirene: http 503"):
        await registry.fetch_registry(fake_clients.sirene, fake_clients.bodacc, fp.SIRENE_DOWN)
    with pytest.raises(SourceUnavailable, match="http 404"):
        await registry.fetch_registry(fake_clients.sirene, fake_clients.bodacc, fp.UNKNOWN)


async def test_accounting_fetch_and_faults(fake_clients: ProviderClients) -> None:
    assert fake_clients.accounting is not None
    raw = await accounting.fetch_accounting(fake_clients.accounting, fp.OK)
    assert accounting.parse_raw(raw, AS_OF).statements[0].revenue == 60000
    with pytest.raises(SourceUnavailable, match="not_found"):
        await accounting.fetch_accounting(fake_clients.accounting, fp.NO_BOOKS)
    unbalanced = await accounting.fetch_accounting(fake_clients.accounting, fp.BOOKS_UNBALANCED)
    with pytest.raises(SourceFormatError, match="unbalanced"):
        accounting.parse_raw(unbalanced, AS_OF)
    with pytest.raises(SourceFormatError, match="invalid json"):
        await accounting.fetch_accounting(fake_clients.accounting, fp.BOOKS_MALFORMED)


async def test_connection_refused_is_an_upstream_error() -> None:
    clients = ProviderClients.sandbox(f"http://127.0.0.1:{free_port()}", Settings())
    try:
        assert clients.accounting is not None
        with pytest.raises(SourceUpstreamError, match=r"fec index: ConnectError"):
            await accounting.fetch_accounting(clients.accounting, fp.OK)
    finally:
        await clients.aclose()


def test_live_clients_follow_settings() -> None:
    assert ProviderClients.live(Settings()) is None


async def test_live_clients_per_provider() -> None:
    clients = ProviderClients.live(Settings(live_registry_url="http://127.0.0.1:9/sirene"))
    assert clients is not None
    try:
        assert clients.sirene is not None
        assert str(clients.sirene.base_url) == "http://127.0.0.1:9/sirene/"
        assert clients.open_banking is None
        assert clients.accounting is None
        assert clients.consent_token("111111118") is None
    finally:
        await clients.aclose()
