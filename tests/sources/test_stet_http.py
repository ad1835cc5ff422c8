"""The STET client over real HTTP: pagination and hrefs of every form, X-Request-ID,
http-signature, 429 inside the budget, embedded balances, mutual TLS, the bank directory."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from b2bscore.kit.settings import Settings
from b2bscore.sources import open_banking
from b2bscore.sources.banks import Bank, BankDirectory, BankQuirks, load_directory
from b2bscore.sources.clients import ProviderClients, stet_client
from b2bscore.sources.errors import SourceUpstreamError
from b2bscore.sources.fanout import gather_sources
from b2bscore.sources.stet_http import StetClient, retry_after_seconds
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import SourceStatus
from tests.servers import free_port, serve_in_thread
from tests.sources import payloads

TOKENIZER = Tokenizer(b"k" * 32)
PREFIX = "/bank/v1"
PAGE_DELAY = 0.25
SIREN = "552100554"


def _app() -> FastAPI:
    """A STET bank: two pages of accounts, one with embedded balances, hrefs of all forms."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []
    app.state.seen = seen
    limited: dict[str, int] = {}

    def record(request: Request) -> None:
        raw = request.scope["raw_path"].decode()
        query = request.scope["query_string"].decode()
        seen.append(
            {
                "target": f"{request.method.lower()} {raw}" + (f"?{query}" if query else ""),
                "path": request.url.path,
                "params": dict(request.query_params),
                "headers": dict(request.headers),
            }
        )

    def token(request: Request) -> str:
        return request.headers.get("authorization", "").removeprefix("Bearer ")

    app.state.fuzz = {}

    @app.get(f"{PREFIX}/accounts")
    async def accounts(request: Request, page: int = 1) -> Response:
        record(request)
        kind = token(request)
        if kind == "fuzz":
            return Response(app.state.fuzz["accounts"], media_type="application/json")
        if kind.startswith("rate-limited"):
            limited[kind] = limited.get(kind, 0) + 1
            if kind == "rate-limited-long" or limited[kind] == 1:
                wait = "30" if kind == "rate-limited-long" else "0"
                return JSONResponse({"error": "too_many"}, 429, headers={"Retry-After": wait})
        base = str(request.base_url).rstrip("/")
        if page == 1:
            first = payloads.account("A", payloads.IBAN_MAIN, base=f"{base}{PREFIX}")
            del first["_links"]["balances"]  # the default path is used
            # Relative to the API root, version segment repeated, as the STET 1.4 example.
            links = {"self": {"href": "v1/accounts"}, "next": {"href": "v1/accounts?page=2"}}
            return JSONResponse({"accounts": [first, {"no": "resourceId"}], "_links": links})
        second = {
            "resourceId": "B",
            "currency": "EUR",
            "cashAccountType": "CACC",
            "balances": [
                {"balanceType": "CLBD", "balanceAmount": {"amount": "42.00", "currency": "EUR"}}
            ],
        }
        return JSONResponse({"accounts": [second], "_links": {"self": {"href": "v1/accounts"}}})

    @app.get(PREFIX + "/accounts/{rid}/balances")
    async def balances(rid: str, request: Request) -> Response:
        record(request)
        if rid != "A":
            return JSONResponse({"error": "not_found"}, 404)
        return JSONResponse(payloads.balances(CLBD="100.00"))

    @app.get(PREFIX + "/accounts/{rid}/transactions")
    async def transactions(
        rid: str, request: Request, page: int = 1, cursor: str | None = None
    ) -> Response:
        record(request)
        if token(request) == "fuzz":
            return Response(app.state.fuzz["page"], media_type="application/json")
        if rid == "B":
            return JSONResponse(payloads.page([payloads.tx("1.00", "CRDT")]))
        href = f"{PREFIX}/accounts/A/transactions?page="  # server-absolute links
        if page == 1:
            txs = [payloads.tx("10.00", "CRDT"), {"transactionAmount": "broken"}]
            body = payloads.page(txs, f"{href}2")
            body["_links"]["last"] = {"href": f"{href}3"}
            return JSONResponse(body)
        await asyncio.sleep(PAGE_DELAY)
        if page == 2:
            nxt = f"{href}3&cursor=moved" if token(request) == "chain-break" else f"{href}3"
            return JSONResponse(payloads.page([payloads.tx("-3.00", "DBIT")], nxt))
        amount = "5.00" if cursor == "moved" else "2.00"
        return JSONResponse(payloads.page([payloads.tx(amount, "CRDT")]))

    return app


@pytest.fixture(scope="module")
def bank_app() -> FastAPI:
    return _app()


@pytest.fixture(scope="module")
def bank_url(bank_app: FastAPI) -> Iterator[str]:
    with serve_in_thread(bank_app) as url:
        yield url


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "qseal.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key.public_key()


def _bank(url: str, **quirks: bool) -> Bank:
    return Bank(
        id="test-bank",
        name="Test bank",
        api_base_url=f"{url}{PREFIX}",
        stet_version="1.4.2",
        sandbox=True,  # plain http on loopback
        quirks=BankQuirks(**quirks),
    )


@pytest.fixture
async def client(
    bank_url: str, signing_key: tuple[Path, rsa.RSAPublicKey]
) -> AsyncIterator[StetClient]:
    settings = Settings(
        open_banking_signing_key_file=signing_key[0],
        open_banking_signing_key_id="https://tpp.example/qsealc.pem",
    )
    stet = stet_client(_bank(bank_url), settings)
    yield stet
    await stet.aclose()


@pytest.fixture
def seen(bank_app: FastAPI) -> list[dict[str, Any]]:
    bank_app.state.seen.clear()
    seen: list[dict[str, Any]] = bank_app.state.seen
    return seen


class TestFetch:
    async def test_pages_hrefs_and_embedded_balances(
        self, client: StetClient, seen: list[dict[str, Any]]
    ) -> None:
        raw = await open_banking.fetch_open_banking(client, "ok")
        assert [a["resourceId"] for a in raw["accounts"]["accounts"] if "resourceId" in a] == [
            "A",
            "B",
        ]
        assert len(raw["transactions"]["A"]) == 3
        assert set(raw["balances"]) == {"A"}  # B's balances came inside the account
        paths = [s["path"] for s in seen]
        assert f"{PREFIX}/accounts/B/balances" not in paths
        assert not any("/v1/v1/" in p for p in paths)
        data = open_banking.parse_raw(raw, TOKENIZER, date(2026, 1, 31))
        assert [a.balance for a in data.accounts] == [100, 42]
        assert [len(a.transactions) for a in data.accounts] == [3, 1]
        assert data.dropped == 2  # the account without resourceId and the broken entry

    async def test_numbered_pages_are_fetched_at_once(self, client: StetClient) -> None:
        started = time.monotonic()
        raw = await open_banking.fetch_open_banking(client, "ok")
        # Pages 2 and 3 each take PAGE_DELAY; asked one after the other they take twice it.
        assert time.monotonic() - started < 2 * PAGE_DELAY
        pages = raw["transactions"]["A"][1:]
        amounts = [p["transactions"][0]["transactionAmount"]["amount"] for p in pages]
        assert amounts == ["-3.00", "2.00"]

    async def test_a_chain_that_leaves_the_numbering_is_followed(self, client: StetClient) -> None:
        raw = await open_banking.fetch_open_banking(client, "chain-break")
        pages = raw["transactions"]["A"]
        assert len(pages) == 3
        assert pages[2]["transactions"][0]["transactionAmount"]["amount"] == "5.00"

    async def test_history_window_and_request_ids(
        self, client: StetClient, seen: list[dict[str, Any]]
    ) -> None:
        await open_banking.fetch_open_banking(client, "ok")
        firsts = [
            s for s in seen if s["path"].endswith("/transactions") and "page" not in s["params"]
        ]
        assert len(firsts) == 2
        for request in firsts:
            start = datetime.fromisoformat(request["params"]["dateFrom"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(request["params"]["dateTo"].replace("Z", "+00:00"))
            assert start.tzinfo is not None
            assert end.tzinfo is not None
            assert end - start >= timedelta(days=client.history_days)
            assert end <= datetime.now(UTC)
        ids = [s["headers"]["x-request-id"] for s in seen]
        assert len(ids) == len(seen) == len(set(ids))
        assert all(uuid.UUID(i).version == 4 for i in ids)

    async def test_every_call_is_signed(
        self,
        client: StetClient,
        seen: list[dict[str, Any]],
        signing_key: tuple[Path, rsa.RSAPublicKey],
    ) -> None:
        await open_banking.fetch_open_banking(client, "ok")
        empty = base64.b64encode(hashlib.sha256(b"").digest()).decode()
        for request in seen:
            headers = request["headers"]
            assert headers["digest"] == f"SHA-256={empty}"
            fields = dict(
                part.split("=", 1) for part in headers["signature"].split(",") if "=" in part
            )
            assert fields["keyId"] == '"https://tpp.example/qsealc.pem"'
            assert fields["algorithm"] == '"rsa-sha256"'
            assert fields["headers"] == '"(request-target) digest x-request-id"'
            signed = (
                f"(request-target): {request['target']}\n"
                f"digest: {headers['digest']}\n"
                f"x-request-id: {headers['x-request-id']}"
            ).encode()
            signature = base64.b64decode(fields["signature"].strip('"'))
            # Raises InvalidSignature when the bank could not verify it.
            signing_key[1].verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())

    async def test_unsigned_client_still_sends_request_ids(
        self, bank_url: str, seen: list[dict[str, Any]]
    ) -> None:
        stet = stet_client(_bank(bank_url), Settings())
        try:
            await open_banking.fetch_open_banking(stet, "ok")
        finally:
            await stet.aclose()
        assert all("x-request-id" in s["headers"] for s in seen)
        assert not any("signature" in s["headers"] for s in seen)

    async def test_429_with_retry_after_is_waited_out(
        self, client: StetClient, seen: list[dict[str, Any]]
    ) -> None:
        raw = await open_banking.fetch_open_banking(
            client, "rate-limited-once", deadline=time.monotonic() + 2
        )
        assert len(raw["accounts"]["accounts"]) == 3
        assert sum(1 for s in seen if s["path"] == f"{PREFIX}/accounts") == 3  # 429, 200, page 2

    async def test_429_past_the_deadline_fails_at_once(self, client: StetClient) -> None:
        started = time.monotonic()
        with pytest.raises(SourceUpstreamError, match="accounts page 1: http 429"):
            await open_banking.fetch_open_banking(
                client, "rate-limited-long", deadline=started + 0.5
            )
        assert time.monotonic() - started < 0.3  # never slept towards a 30 s Retry-After

    async def test_dropped_entries_are_in_the_source_detail(self, bank_url: str) -> None:
        stet = stet_client(_bank(bank_url), Settings())
        clients = ProviderClients(
            open_banking=stet,
            sirene=None,
            bodacc=None,
            accounting=None,
            consent_token=lambda siren: "ok",
        )
        try:
            bundle = await gather_sources(
                SIREN,
                clients,
                deadline=time.monotonic() + 5,
                cache=None,
                tokenizer=TOKENIZER,
                as_of=date(2026, 1, 31),
                cache_namespace="t",
            )
        finally:
            await clients.aclose()
        assert bundle.open_banking.status == SourceStatus.OK
        assert bundle.open_banking.detail == "2 malformed entries dropped"


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Sat, 31 Jan 2026 12:00:02 GMT", now) == 2.0
    assert retry_after_seconds("Sat, 31 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


# --- the bank directory -------------------------------------------------------------------


class TestDirectory:
    def test_shipped_directory(self) -> None:
        directory = load_directory()
        sandbox = [b for b in directory.banks if b.sandbox]
        assert {b.id for b in sandbox} == {"sandbox-stet14", "sandbox-stet16"}
        assert directory.get("sandbox-stet16") is not None
        stet16 = directory.get("sandbox-stet16")
        assert stet16 is not None
        assert stet16.quirks.embedded_balances
        assert not stet16.quirks.balances_endpoint
        for bank in directory.live:
            assert bank.api_base_url.startswith("https://")
            assert bank.documentation

    def test_override_file(self, tmp_path: Path) -> None:
        path = tmp_path / "banks.json"
        path.write_text(
            BankDirectory(banks=(_bank("http://127.0.0.1:9"),)).model_dump_json(), "utf-8"
        )
        assert [b.id for b in load_directory(path).banks] == ["test-bank"]

    @pytest.mark.parametrize(
        "banks",
        [
            [{"id": "x", "name": "X", "api_base_url": "http://x", "stet_version": "1.4"}],
            [{"id": "x", "name": "X", "api_base_url": "https://x", "stet_version": "2.0"}],
            [{"id": "x", "name": "X", "api_base_url": "https://x", "stet_version": "1.6"}] * 2,
            [{"id": "X Y", "name": "X", "api_base_url": "https://x", "stet_version": "1.6"}],
            [
                {
                    "id": "x",
                    "name": "X",
                    "api_base_url": "https://x",
                    "stet_version": "1.6",
                    "quirks": {"unknown": True},
                }
            ],
        ],
    )
    def test_bad_directories_are_refused(self, banks: list[dict[str, Any]]) -> None:
        with pytest.raises(ValidationError):
            BankDirectory.model_validate({"banks": banks})

    async def test_sandbox_clients_route_each_company_to_its_bank(self) -> None:
        clients = ProviderClients.sandbox("http://127.0.0.1:9", Settings())
        try:
            ids = {clients.bank_client(s).bank.id for s in ("111111118", "222222226")}  # type: ignore[union-attr]
            assert ids == {"sandbox-stet14", "sandbox-stet16"}
            stet16 = clients.banks["sandbox-stet16"]
            assert str(stet16.http.base_url) == "http://127.0.0.1:9/stet/v1.6/"
        finally:
            await clients.aclose()

    async def test_live_clients_for_the_directory_banks(self) -> None:
        settings = Settings(
            live_open_banking_url="https://bank.example/stet/v1",
            live_registry_url="http://127.0.0.1:9/sirene",
        )
        clients = ProviderClients.live(settings)
        assert clients is not None
        try:
            assert clients.open_banking is not None
            assert str(clients.open_banking.http.base_url) == "https://bank.example/stet/v1/"
            assert set(clients.banks) == {b.id for b in load_directory().live}
            assert clients.consent_token(SIREN) is None  # no consent store yet
        finally:
            await clients.aclose()


# --- mutual TLS -----------------------------------------------------------------------------


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, the bank's server certificate and the TPP's client (QWAC-like) certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("test CA", ca_key, None, ca=True)
    _write(folder / "ca", ca)
    for name, server in (("server", True), ("client", False)):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(folder / name, _cert(name, key, (ca.subject, ca_key), server=server), key)
    return folder


@pytest.fixture(scope="module")
def tls_bank_url(pki: Path) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        _app(),
        host="127.0.0.1",
        port=port,
        log_level="critical",
        ssl_certfile=str(pki / "server.crt"),
        ssl_keyfile=str(pki / "server.key"),
        ssl_ca_certs=str(pki / "ca.crt"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("TLS test server did not start")
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class TestMutualTls:
    async def test_client_certificate_from_settings(self, pki: Path, tls_bank_url: str) -> None:
        settings = Settings(
            open_banking_ca_file=pki / "ca.crt",
            open_banking_client_cert_file=pki / "client.crt",
            open_banking_client_key_file=pki / "client.key",
        )
        stet = stet_client(_bank(tls_bank_url), settings)
        try:
            raw = await open_banking.fetch_open_banking(stet, "ok")
        finally:
            await stet.aclose()
        assert len(raw["transactions"]) == 2

    async def test_without_a_client_certificate_the_bank_refuses(
        self, pki: Path, tls_bank_url: str
    ) -> None:
        stet = stet_client(_bank(tls_bank_url), Settings(open_banking_ca_file=pki / "ca.crt"))
        try:
            with pytest.raises(SourceUpstreamError, match="accounts page 1"):
                await asyncio.wait_for(open_banking.fetch_open_banking(stet, "ok"), 5)
        finally:
            await stet.aclose()


# --- property: whatever a bank sends, the source ends as a status, never an internal error --

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**16), max_value=10**16)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(["A", "CRDT", "DBIT", "BOOK", "OTHR", "2026-01-30", "-1.50", "CLBD"])
)
_KEYS = st.sampled_from(
    ["accounts", "resourceId", "transactions", "transactionAmount", "amount", "status",
     "creditDebitIndicator", "bookingDate", "balances", "_links", "next", "href", "last"]
)  # fmt: skip
_value = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=15,
)


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accounts=_value.map(_body)
    | st.builds(lambda a: _body({"accounts": a}), st.lists(_value, max_size=3))
    | st.just(_body({"accounts": [{"resourceId": "A"}]})),
    page=_value.map(_body) | st.binary(max_size=30),
)
def test_any_answer_ends_as_a_source_status(
    bank_app: FastAPI, bank_url: str, accounts: bytes, page: bytes
) -> None:
    bank_app.state.fuzz = {"accounts": accounts, "page": page}

    async def run() -> Any:
        stet = stet_client(_bank(bank_url), Settings())
        clients = ProviderClients(
            open_banking=stet, sirene=None, bodacc=None, accounting=None,
            consent_token=lambda siren: "fuzz",
        )  # fmt: skip
        try:
            return await gather_sources(
                SIREN, clients, deadline=time.monotonic() + 5, cache=None,
                tokenizer=TOKENIZER, as_of=date(2026, 1, 31), cache_namespace="fuzz",
            )  # fmt: skip
        finally:
            await clients.aclose()

    result = asyncio.run(run()).open_banking
    assert result.status in (SourceStatus.OK, SourceStatus.ERROR, SourceStatus.UNAVAILABLE)
    assert not (result.detail or "").startswith("internal"), result.detail
