"""HTTP clients of the providers, one pooled client each, and the shared JSON GET."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from b2bscore.kit.settings import Settings
from b2bscore.sources.banks import Bank, load_directory, sandbox_bank_of
from b2bscore.sources.errors import (
    SourceAbsent,
    SourceFormatError,
    SourceUnavailable,
    SourceUpstreamError,
)
from b2bscore.sources.stet_http import RequestSigner, StetAuth, StetClient, resolve_href

SIRENE_KEY_HEADER = "X-INSEE-Api-Key-Integration"

SANDBOX_PATHS: Mapping[str, str] = {
    "open_banking": "/stet/v1",
    "sirene": "/sirene/v3.11",
    "bodacc": "/bodacc/api/explore/v2.1",
    "accounting": "/accounting/v1",
}


def sandbox_consent_token(siren: str) -> str | None:
    """The sandbox PSU token of a company: every sandbox company has one."""
    return f"sandbox-{siren}"


def no_consent_token(siren: str) -> str | None:
    """No consent store is wired yet: every company is without bank consent."""
    return None


def default_bank(siren: str) -> str | None:
    """No consent store names banks yet: every company is at the default bank."""
    return None


def _client(
    base_url: str,
    settings: Settings,
    *,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    # The fan-out enforces the real deadline by cancelling; this timeout only stops a
    # request from outliving a request budget if used outside the fan-out. retries=0:
    # a retry would always land past the deadline.
    budget = settings.deadline_ms / 1000
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=httpx.Timeout(budget, connect=min(budget, 1.0)),
        auth=auth,
        transport=httpx.AsyncHTTPTransport(
            verify=verify,
            retries=0,
            limits=httpx.Limits(
                max_connections=settings.provider_max_connections,
                max_keepalive_connections=settings.provider_max_connections,
                keepalive_expiry=30.0,
            ),
        ),
        headers={"Accept": "application/json", **(headers or {})},
        follow_redirects=False,
    )


def _tls(settings: Settings) -> ssl.SSLContext | bool:
    # Mutual TLS with the TPP's QWAC, when configured: banks refuse the handshake without.
    cert, key = settings.open_banking_client_cert_file, settings.open_banking_client_key_file
    ca = settings.open_banking_ca_file
    if cert is None and ca is None:
        return True
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def stet_client(
    bank: Bank, settings: Settings, sandbox_url: str | None = None, base_url: str | None = None
) -> StetClient:
    """The client of one bank: its API root, X-Request-ID, signature and TLS from settings."""
    signer = None
    if settings.open_banking_signing_key_file is not None:
        signer = RequestSigner.from_pem_file(
            settings.open_banking_signing_key_file, settings.open_banking_signing_key_id or ""
        )
    http = _client(
        base_url or bank.base_url(sandbox_url),
        settings,
        auth=StetAuth(signer),
        verify=_tls(settings),
    )
    return StetClient(bank, http, settings.open_banking_history_days)


@dataclass(slots=True)
class ProviderClients:
    """One pooled client per provider (None: provider not configured) and the consent store.

    ``open_banking`` is the default bank's client; ``banks`` holds every configured bank's,
    and ``bank_of`` names the bank of a company (None: the default one).
    """

    open_banking: StetClient | None
    sirene: httpx.AsyncClient | None
    bodacc: httpx.AsyncClient | None
    accounting: httpx.AsyncClient | None
    consent_token: Callable[[str], str | None] = field(default=no_consent_token)
    banks: Mapping[str, StetClient] = field(default_factory=dict)
    bank_of: Callable[[str], str | None] = field(default=default_bank)
    # The Sirene plan's quota (requests a minute); None: unlimited (the sandbox).
    sirene_per_minute: int | None = None

    def bank_client(self, siren: str) -> StetClient | None:
        """The STET client of the company's bank; None when that bank is not configured."""
        bank_id = self.bank_of(siren)
        return self.open_banking if bank_id is None else self.banks.get(bank_id)

    @classmethod
    def sandbox(cls, base_url: str, settings: Settings) -> ProviderClients:
        """Clients of the four simulated providers served under one sandbox URL."""
        root = base_url.rstrip("/")
        directory = load_directory(settings.open_banking_banks_file)
        banks = {b.id: stet_client(b, settings, root) for b in directory.banks if b.sandbox}
        return cls(
            open_banking=banks.get(settings.open_banking_default_bank),
            sirene=_client(root + SANDBOX_PATHS["sirene"], settings),
            bodacc=_client(root + SANDBOX_PATHS["bodacc"], settings),
            accounting=_client(root + SANDBOX_PATHS["accounting"], settings),
            consent_token=sandbox_consent_token,
            banks=banks,
            bank_of=sandbox_bank_of,
        )

    @classmethod
    def live(cls, settings: Settings) -> ProviderClients | None:
        """Clients of the live providers configured in settings; None when none is."""
        urls = (
            settings.live_open_banking_url,
            settings.live_registry_url,
            settings.live_bodacc_url,
            settings.live_accounting_url,
        )
        if not any(urls):
            return None
        bodacc, accounting = (_client(u, settings) if u else None for u in urls[2:])
        sirene = None
        if settings.live_registry_url:
            key = settings.sirene_api_key
            # The INSEE portal's integration key; kept in the client, never in a log line.
            headers = {SIRENE_KEY_HEADER: key.get_secret_value()} if key is not None else None
            sirene = _client(settings.live_registry_url, settings, headers=headers)
        directory = load_directory(settings.open_banking_banks_file)
        banks = {b.id: stet_client(b, settings) for b in directory.live}
        ob = None
        if settings.live_open_banking_url:
            bank = directory.get(settings.open_banking_default_bank)
            if bank is None:
                raise ValueError("B2BSCORE_OPEN_BANKING_DEFAULT_BANK names no bank")
            ob = stet_client(bank, settings, base_url=settings.live_open_banking_url)
        # Live consent tokens (and the bank of each) come from a consent store that does
        # not exist yet.
        return cls(
            ob,
            sirene,
            bodacc,
            accounting,
            consent_token=no_consent_token,
            banks=banks,
            sirene_per_minute=settings.sirene_requests_per_minute,
        )

    async def aclose(self) -> None:
        """Close every pool."""
        stet = {id(c): c for c in (self.open_banking, *self.banks.values()) if c is not None}
        for bank_client in stet.values():
            await bank_client.aclose()
        for client in (self.sirene, self.bodacc, self.accounting):
            if client is not None:
                await client.aclose()


def _error_code(content: bytes) -> str | None:
    # STET error bodies carry a machine-readable "error" (e.g. consent_missing).
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and len(code) <= 64 and code.isidentifier() else None


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds; None when absent or an HTTP date (never worth a wait here)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


# A fiscal year's FEC of a large SME is a few megabytes; beyond this it is not one company's.
MAX_TEXT_BYTES = 32 * 1024 * 1024


async def get_text(client: httpx.AsyncClient, url: str, *, what: str) -> str:
    """GET url and return its body as text (a FEC file), mapping failures to SourceErrors."""
    try:
        response = await client.get(
            resolve_href(client.base_url, url), headers={"Accept": "text/plain"}
        )
    except httpx.TimeoutException as error:
        raise SourceUpstreamError(f"{what}: timeout") from error
    except httpx.HTTPError as error:
        raise SourceUpstreamError(f"{what}: {type(error).__name__}") from error
    status = response.status_code
    if status in (401, 403, 404):
        reason = f"{what}: http {status}"
        if status == 404:
            raise SourceAbsent(reason)
        raise SourceUnavailable(reason)
    if status != 200:
        raise SourceUpstreamError(f"{what}: http {status}")
    if len(response.content) > MAX_TEXT_BYTES:
        raise SourceFormatError(f"{what}: body over {MAX_TEXT_BYTES} bytes")
    # Encoding (UTF-8 or Latin-1) is the FEC reader's to sort out; keep every byte.
    raw = response.content
    try:
        return raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def get_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    what: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    loads: Callable[[bytes], Any] = orjson.loads,
    call_timeout: float | None = None,
) -> dict[str, Any]:
    """GET url and return its JSON object, mapping every failure to a SourceError.

    call_timeout, when given, replaces the client's own timeout for this call.
    """
    try:
        if call_timeout is None:
            response = await client.get(url, params=params, headers=headers)
        else:
            response = await client.get(url, params=params, headers=headers, timeout=call_timeout)
    except httpx.TimeoutException as error:
        raise SourceUpstreamError(f"{what}: timeout") from error
    except httpx.HTTPError as error:
        raise SourceUpstreamError(f"{what}: {type(error).__name__}") from error
    status = response.status_code
    if status in (401, 403, 404):
        code = _error_code(response.content)
        reason = f"{what}: {code or f'http {status}'}"
        if status == 404 or code == "consent_missing":
            raise SourceAbsent(reason)
        raise SourceUnavailable(reason)
    if status == 429:
        raise SourceUpstreamError(
            f"{what}: http 429", retry_after=retry_after_seconds(response.headers)
        )
    if status != 200:
        raise SourceUpstreamError(f"{what}: http {status}")
    try:
        body = loads(response.content)
    except ValueError as error:  # orjson's and json's decode errors are ValueErrors
        raise SourceFormatError(f"{what}: invalid json") from error
    if not isinstance(body, dict):
        raise SourceFormatError(f"{what}: not a json object")
    return body
