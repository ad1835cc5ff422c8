"""The provider sandbox over real HTTP (uvicorn on loopback, httpx client)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn

from b2bscore.sandbox import wire
from b2bscore.sandbox.app import create_sandbox_app
from b2bscore.sandbox.profile import SandboxProfile
from b2bscore.sources.fec import FecError, parse_fec
from b2bscore.training.world import SCENARIOS, company, sample_sirens
from tests.servers import serve_in_thread


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        create_sandbox_app(SandboxProfile.preset("zero")),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "sandbox died on start-up"
        assert time.monotonic() < deadline, "sandbox did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        yield c


def _auth(siren: str) -> dict[str, str]:
    return {"Authorization": f"Bearer sandbox-{siren}"}


def _ordinary() -> str:
    """A company with bank consent and more than one page of transactions."""
    for siren in sample_sirens(50, seed=123):
        c = company(siren)
        if c.bank_consent and len(c.accounts[0].transactions) > 120:
            return siren
    raise AssertionError("no suitable company")


def test_healthz(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["profile"] == "zero"


def test_pagination_walk_returns_every_transaction(client: httpx.Client) -> None:
    siren = _ordinary()
    accounts = client.get("/stet/v1/accounts", headers=_auth(siren))
    assert accounts.status_code == 200
    listed = accounts.json()["accounts"]
    world = company(siren)
    assert [a["resourceId"] for a in listed] == [a.resource_id for a in world.accounts]
    for acc, entry in zip(world.accounts, listed, strict=True):
        balances = client.get(entry["_links"]["balances"]["href"], headers=_auth(siren))
        assert balances.status_code == 200
        types = {b["balanceType"] for b in balances.json()["balances"]}
        assert types & {"CLBD", "XPCD"}
        href: str | None = entry["_links"]["transactions"]["href"]
        seen, pages = [], 0
        while href:
            page = client.get(href, headers=_auth(siren))
            assert page.status_code == 200
            body = page.json()
            assert len(body["transactions"]) <= wire.PAGE_SIZE
            seen.extend(body["transactions"])
            href = body["_links"].get("next", {}).get("href")
            pages += 1
        assert len(seen) == len(acc.transactions)
        assert pages == max(1, -(-len(acc.transactions) // wire.PAGE_SIZE))
        assert [t["bookingDate"] for t in seen] == sorted(
            (t["bookingDate"] for t in seen), reverse=True
        )
    # Same content as the in-process renderer used for training.
    as_of = datetime.now(UTC).date()
    first = client.get(
        f"/stet/v1/accounts/{listed[0]['resourceId']}/transactions", headers=_auth(siren)
    ).json()
    assert first == wire.render_transaction_pages(world.accounts[0], as_of)[0]


def test_date_from_filters_and_keeps_it_in_next_links(client: httpx.Client) -> None:
    siren = _ordinary()
    rid = company(siren).accounts[0].resource_id
    as_of = datetime.now(UTC).date()
    date_from = as_of.fromordinal(as_of.toordinal() - 30)
    href: str | None = f"/stet/v1/accounts/{rid}/transactions?dateFrom={date_from}"
    dates = []
    while href:
        body = client.get(href, headers=_auth(siren)).json()
        dates += [t["bookingDate"] for t in body["transactions"]]
        href = body["_links"].get("next", {}).get("href")
        assert href is None or f"dateFrom={date_from}" in href
    assert dates
    assert min(dates) >= date_from.isoformat()


def test_stet_requires_a_token(client: httpx.Client) -> None:
    r = client.get("/stet/v1/accounts")
    assert r.status_code == 401
    assert r.json()["status"] == 401
    assert client.get("/stet/v1/accounts", headers=_auth("123456789")).status_code == 401


def test_unknown_account_is_404(client: httpx.Client) -> None:
    r = client.get("/stet/v1/accounts/nope/balances", headers=_auth(_ordinary()))
    assert r.status_code == 404


def test_no_bank_consent_is_403(client: httpx.Client) -> None:
    r = client.get("/stet/v1/accounts", headers=_auth(SCENARIOS["no_bank_consent"]))
    assert r.status_code == 403
    assert r.json()["error"] == "consent_missing"


def test_registry(client: httpx.Client) -> None:
    siren = SCENARIOS["collective_proceedings"]
    r = client.get(f"/sirene/v3.11/siren/{siren}")
    assert r.status_code == 200
    assert r.json()["uniteLegale"]["periodesUniteLegale"][0]["etatAdministratifUniteLegale"] == "A"
    r = client.get(
        "/bodacc/api/explore/v2.1/catalog/datasets/annonces-commerciales/records",
        params={"refine": f"registre:{siren}", "limit": "100"},
    )
    assert r.status_code == 200
    families = [a["familleavis"] for a in r.json()["results"]]
    assert "collective" in families
    closed = client.get(f"/sirene/v3.11/siren/{SCENARIOS['closed_company']}").json()
    assert closed["uniteLegale"]["periodesUniteLegale"][0]["etatAdministratifUniteLegale"] == "C"


def test_registry_error_is_503(client: httpx.Client) -> None:
    r = client.get(f"/sirene/v3.11/siren/{SCENARIOS['registry_error']}")
    assert r.status_code == 503


def test_invalid_sirens(client: httpx.Client) -> None:
    assert client.get("/sirene/v3.11/siren/123456789").status_code == 404
    assert client.get("/sirene/v3.11/siren/12345").status_code == 400
    assert client.get("/accounting/v1/companies/123456789/fec").status_code == 404


def test_accounting(client: httpx.Client) -> None:
    healthy = SCENARIOS["healthy"]
    ok = client.get(f"/accounting/v1/companies/{healthy}/fec")
    assert ok.status_code == 200
    files = ok.json()["files"]
    assert len(files) == 3
    assert all(f["name"].startswith(f"{healthy}FEC") for f in files)
    text = client.get(files[0]["href"])
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    parse_fec(text.content)
    assert client.get(f"/accounting/v1/companies/{healthy}/fec/nope.txt").status_code == 404
    thin = client.get(f"/accounting/v1/companies/{SCENARIOS['thin_file_startup']}/fec")
    assert thin.status_code == 404
    malformed = SCENARIOS["accounting_malformed"]
    index = client.get(f"/accounting/v1/companies/{malformed}/fec")
    assert index.status_code == 200
    bad = client.get(index.json()["files"][0]["href"])
    assert bad.status_code == 200
    with pytest.raises(FecError, match="line"):
        parse_fec(bad.content)


def test_bank_truncated_next_link_fails(client: httpx.Client) -> None:
    siren = SCENARIOS["bank_truncated"]
    rid = company(siren).accounts[0].resource_id
    first = client.get(f"/stet/v1/accounts/{rid}/transactions", headers=_auth(siren))
    assert first.status_code == 200
    nxt = first.json()["_links"]["next"]["href"]
    assert client.get(nxt, headers=_auth(siren)).status_code == 500


def test_bank_timeout_exceeds_client_deadline(base_url: str) -> None:
    start = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=0.5) as c, pytest.raises(httpx.ReadTimeout):
        c.get("/stet/v1/accounts", headers=_auth(SCENARIOS["bank_timeout"]))
    assert time.monotonic() - start < 2.0


def test_profile_presets_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SandboxProfile.from_env().name == "zero"
    monkeypatch.setenv("B2BSCORE_SANDBOX_PROFILE", "realistic")
    real = SandboxProfile.from_env()
    assert real.open_banking.median_ms == 45
    assert real.sirene.timeout_rate == 0.01
    monkeypatch.setenv(
        "B2BSCORE_SANDBOX_PROFILE", '{"preset": "realistic", "sirene": {"error_rate": 1.0}}'
    )
    custom = SandboxProfile.from_env()
    assert custom.sirene.error_rate == 1.0
    assert custom.bodacc.median_ms == 40
    with pytest.raises(ValueError, match="unknown"):
        SandboxProfile.parse("chaotic")


def test_keyed_latency_and_faults_keep_the_published_rates() -> None:
    p = SandboxProfile.preset("realistic").open_banking
    draws = SandboxProfile(seed="rates").draws()
    sirens = sample_sirens(20_000, 3)
    latencies = sorted(p.latency_s(draws.uniform("open_banking", s, "latency")) for s in sirens)
    assert 0.040 < latencies[10_000] < 0.050
    assert 0.22 < latencies[int(0.99 * 20_000)] < 0.34
    faults = [p.fault(draws.uniform("open_banking", s, "fault")) for s in sirens * 5]
    faults += [p.fault(draws.uniform("open_banking", s, "fault", "2")) for s in sirens * 5]
    assert 0.008 < faults.count("timeout") / len(faults) < 0.012
    assert 0.003 < faults.count("error") / len(faults) < 0.007


def test_draws_are_keyed_by_seed_and_call() -> None:
    today = SandboxProfile().draws(datetime(2026, 12, 4, 23, 59, tzinfo=UTC))
    assert today.seed == "2026-12-04"
    again = SandboxProfile().draws(datetime(2026, 12, 4, 0, 1, tzinfo=UTC))
    tomorrow = SandboxProfile().draws(datetime(2026, 12, 5, tzinfo=UTC))
    one = today.uniform("sirene", "111111118", "/sirene", "", "fault")
    assert one == again.uniform("sirene", "111111118", "/sirene", "", "fault")
    assert one != tomorrow.uniform("sirene", "111111118", "/sirene", "", "fault")
    assert one != today.uniform("sirene", "111111118", "/sirene", "", "latency")
    assert 0.0 <= one < 1.0


def test_faults_are_the_same_for_a_company_on_every_try() -> None:
    """Half the companies' registry fails, the same half on every try, over real HTTP."""
    profile = SandboxProfile.model_validate(
        {"name": "half", "seed": "t", "sirene": {"error_rate": 0.5}}
    )
    with serve_in_thread(create_sandbox_app(profile)) as url, httpx.Client(base_url=url) as c:
        sirens = sample_sirens(60, 11)
        first = {s: c.get(f"/sirene/v3.11/siren/{s}").status_code for s in sirens}
        for _ in range(2):
            assert {s: c.get(f"/sirene/v3.11/siren/{s}").status_code for s in sirens} == first
    assert set(first.values()) == {200, 503}
    assert 15 <= list(first.values()).count(503) <= 45


def test_malformed_profile_over_http() -> None:
    profile = SandboxProfile.model_validate(
        {"name": "broken", "accounting": {"malformed_rate": 1.0}, "sirene": {"error_rate": 1.0}}
    )
    app = create_sandbox_app(profile)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            r = c.get(f"/accounting/v1/companies/{SCENARIOS['healthy']}/fec")
            assert r.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.content)
            assert c.get(f"/sirene/v3.11/siren/{SCENARIOS['healthy']}").status_code == 503
    finally:
        server.should_exit = True
        thread.join(timeout=10)
