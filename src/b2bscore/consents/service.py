"""Consents end to end: ask, complete at the callback, sync, serve, revoke, expire, purge.

The flow is OAuth2 authorization code with PKCE (S256) against the bank's authorization
server. Tokens and the synced snapshot are sealed with the data keyring (AES-256-GCM, AAD
bound to tenant and consent), never logged, and purged (NULL) on revocation, on a revocation
seen at the bank during a sync, and after the retention that follows an expiry. Every change
appends a row to consent_events (insert-only); revocation and expiry also write an outbox
event (consent.revoked, consent.expired, consent.expiring) in the same transaction.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.consents.models import Consent, ConsentEvent
from b2bscore.consents.repository import ConsentRepository
from b2bscore.consents.schemas import ConsentCreate, ConsentOut
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.kit.db import SessionOpener, opened_session
from b2bscore.kit.jobs import Jobs
from b2bscore.kit.metrics import CONSENT_SYNCS
from b2bscore.kit.packed import pack_json
from b2bscore.kit.problems import Problem
from b2bscore.kit.settings import Settings
from b2bscore.sources.banks import Bank, load_directory
from b2bscore.sources.clients import ProviderClients
from b2bscore.sources.errors import (
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    SourceUpstreamError,
)
from b2bscore.sources.fanout import ConsentedBank
from b2bscore.sources.open_banking import fetch_identity, fetch_open_banking, parse_raw
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import BankAccount, BankData, BankTransaction
from b2bscore.tenants.models import new_id
from b2bscore.webhooks.service import emit_event

log = logging.getLogger(__name__)

SYNC_TASK = "consents.sync"
EXCHANGE_TASK = "consents.exchange"
# An incremental sync asks again for the last day before the previous one: entries booked
# late (value-dated, pending turned booked) are replaced rather than missed.
SYNC_OVERLAP = timedelta(days=1)
SNAPSHOT_CACHE_SIZE = 4096


def sync_lock(consent_id: str) -> str:
    """The job lock (and queueing lock) under which one consent syncs once at a time."""
    return f"consent-sync:{consent_id}"


async def queue_sync(jobs: Jobs | None, consent_id: str) -> bool:
    """Queue one sync of a consent; False when one is already waiting."""
    if jobs is None:
        return False
    lock = sync_lock(consent_id)
    job = await jobs.defer(SYNC_TASK, lock=lock, queueing_lock=lock, consent_id=consent_id)
    return job is not None


def exchange_lock(consent_id: str) -> str:
    """The job lock (and queueing lock) of a consent's retried code exchange."""
    return f"consent-exchange:{consent_id}"


async def queue_exchange(jobs: Jobs | None, consent_id: str) -> bool:
    """Queue a retry of a pending consent's code exchange; False when one already waits."""
    if jobs is None:
        return False
    lock = exchange_lock(consent_id)
    job = await jobs.defer(EXCHANGE_TASK, lock=lock, queueing_lock=lock, consent_id=consent_id)
    return job is not None


class BankRevoked(Exception):
    """The bank no longer honours the consent (401/403 or invalid_grant)."""


class TokenEndpointError(Exception):
    """The bank's token endpoint failed or timed out (worth a retry)."""


# --- sealing ------------------------------------------------------------------------------


def _aad(kind: str, consent: Consent) -> bytes:
    return f"b2bscore.consent_{kind}.v1|{consent.tenant_id}|{consent.id}".encode()


def _seal_tokens(keyring: DataKeyring, consent: Consent, tokens: dict[str, Any]) -> None:
    key_id, nonce, ciphertext = keyring.encrypt(orjson.dumps(tokens), _aad("tokens", consent))
    consent.tokens_key_id, consent.tokens_nonce, consent.tokens_ciphertext = (
        key_id,
        nonce,
        ciphertext,
    )


def _open_tokens(keyring: DataKeyring, consent: Consent) -> dict[str, Any]:
    if consent.tokens_ciphertext is None or consent.tokens_nonce is None:
        return {}
    plain = keyring.decrypt(
        consent.tokens_key_id or "",
        consent.tokens_nonce,
        consent.tokens_ciphertext,
        _aad("tokens", consent),
    )
    tokens: dict[str, Any] = orjson.loads(plain)
    return tokens


def _purge(consent: Consent) -> None:
    """Forget the tokens and every byte of synced bank data of a consent."""
    consent.tokens_key_id = consent.tokens_nonce = consent.tokens_ciphertext = None
    consent.snapshot_key_id = consent.snapshot_nonce = consent.snapshot_ciphertext = None
    consent.snapshot_at = None
    consent.state_hash = None


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- audit and events ---------------------------------------------------------------------


def _audit(
    session: AsyncSession,
    consent: Consent,
    *,
    actor: str,
    action: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    ConsentRepository(session).add_event(
        ConsentEvent(
            id=new_id(),
            consent_id=consent.id,
            tenant_id=consent.tenant_id,
            mode=consent.mode,
            at=now,
            actor=actor,
            action=action,
            status=consent.status,
            scopes=list(consent.granted_scopes or consent.requested_scopes),
            detail=detail or {},
        )
    )


async def _emit(session: AsyncSession, consent: Consent, event_type: str, now: datetime) -> None:
    await emit_event(
        session,
        tenant_id=consent.tenant_id,
        mode=consent.mode,
        event_type=event_type,
        ordering_key=f"consent:{consent.id}",
        data={
            "consent_id": consent.id,
            "siren": consent.siren,
            "bank": consent.bank_id,
            "status": consent.status,
            "scopes": list(consent.granted_scopes),
            "expires_at": consent.expires_at,
        },
        now=now,
    )


def consent_out(consent: Consent, keyring: DataKeyring | None = None) -> ConsentOut:
    """The lender's view of a consent (with keyring: the holder its snapshot names)."""
    holder = None
    if keyring is not None and "identity" in consent.granted_scopes:
        doc = _read_snapshot(keyring, consent)
        holder = doc.get("holder") if doc is not None else None
    return ConsentOut(
        id=consent.id,
        siren=consent.siren,
        bank=consent.bank_id,
        status=consent.status,
        requested_scopes=list(consent.requested_scopes),
        scopes=list(consent.granted_scopes),
        accounts=list(consent.accounts),
        redirect_uri=consent.redirect_uri,
        created_at=consent.created_at,
        activated_at=consent.activated_at,
        expires_at=consent.expires_at,
        last_synced_at=consent.last_synced_at,
        snapshot_at=consent.snapshot_at,
        last_error=consent.last_error,
        holder=holder,
    )


# --- asking ---------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> Problem:
    return Problem(
        422,
        "validation_error",
        "Invalid request",
        f"Invalid fields: {field}",
        errors=[{"field": field, "message": message, "type": "value_error"}],
    )


def bank_of(settings: Settings, mode: str, bank_id: str) -> Bank:
    """The directory's bank for a consent in this mode; 422 naming `bank` otherwise."""
    bank = load_directory(settings.open_banking_banks_file).get(bank_id)
    # Test keys reach the sandbox's banks only, live keys the real ones only.
    if bank is None or bank.sandbox != (mode == "test"):
        raise _invalid("bank", "unknown bank for this mode")
    if bank.authorization_endpoint is None or bank.token_endpoint is None:
        raise _invalid("bank", "this bank offers no consent flow through this service")
    return bank


def _sandbox_url(settings: Settings, bank: Bank) -> str | None:
    return settings.sandbox_url if bank.sandbox else None


async def _check_redirect(
    session: AsyncSession, tenant_id: str, mode: str, redirect_uri: str
) -> None:
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise _invalid("redirect_uri", "must be an absolute URL without fragment")
    if mode == "live" and parts.scheme != "https":
        raise _invalid("redirect_uri", "must be https in live mode")
    if not await ConsentRepository(session).redirect_allowed(tenant_id, mode, redirect_uri):
        raise _invalid("redirect_uri", "not on this tenant's allow-list")


async def create_consent(
    session: AsyncSession,
    settings: Settings,
    keyring: DataKeyring,
    *,
    tenant_id: str,
    mode: str,
    key_id: str,
    body: ConsentCreate,
    now: datetime,
) -> tuple[Consent, str]:
    """A pending consent and the bank URL to send the company's user to (caller commits)."""
    bank = bank_of(settings, mode, body.bank)
    await _check_redirect(session, tenant_id, mode, body.redirect_uri)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    scopes = sorted(set(body.scopes))
    consent = Consent(
        id=new_id(),
        tenant_id=tenant_id,
        mode=mode,
        siren=body.siren,
        bank_id=bank.id,
        status="pending",
        requested_scopes=scopes,
        granted_scopes=[],
        accounts=[],
        redirect_uri=body.redirect_uri,
        state_hash=_state_hash(state),
        state_expires_at=now + timedelta(seconds=settings.consent_state_seconds),
        created_by=key_id,
        created_at=now,
        updated_at=now,
        expiring_notified=False,
    )
    _seal_tokens(keyring, consent, {"code_verifier": verifier})
    session.add(consent)
    _audit(session, consent, actor=key_id, action="requested", now=now)
    await session.flush()
    endpoint = bank.endpoint(bank.authorization_endpoint, _sandbox_url(settings, bank))
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.open_banking_client_id,
            "redirect_uri": settings.consent_callback_url,
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": _s256(verifier),
            "code_challenge_method": "S256",
            "login_hint": body.siren,
        }
    )
    return consent, f"{endpoint}?{query}"


# --- the callback ---------------------------------------------------------------------------


async def _token_call(
    http: httpx.AsyncClient, settings: Settings, bank: Bank, form: dict[str, str]
) -> dict[str, Any]:
    """POST the token endpoint; BankRevoked on invalid_grant, TokenEndpointError otherwise."""
    url = bank.endpoint(bank.token_endpoint, _sandbox_url(settings, bank)) or ""
    try:
        response = await http.post(
            url,
            data={"client_id": settings.open_banking_client_id, **form},
            timeout=settings.consent_token_timeout_seconds,
        )
    except httpx.TimeoutException as error:
        raise TokenEndpointError("timeout") from error
    except httpx.HTTPError as error:
        raise TokenEndpointError(type(error).__name__) from error
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.status_code == 400 and body.get("error") == "invalid_grant":
        raise BankRevoked(str(body.get("error_description") or "invalid_grant"))
    if response.status_code != 200 or not isinstance(body.get("access_token"), str):
        raise TokenEndpointError(f"http {response.status_code}")
    return body


def _apply_tokens(
    keyring: DataKeyring, settings: Settings, consent: Consent, body: dict[str, Any], now: datetime
) -> None:
    expires_in = body.get("expires_in")
    lifetime = int(expires_in) if isinstance(expires_in, int) and expires_in > 0 else 3600
    consent.access_expires_at = now + timedelta(seconds=lifetime)
    refresh = body.get("refresh_token")
    _seal_tokens(
        keyring,
        consent,
        {"access_token": body["access_token"], "refresh_token": refresh},
    )


async def complete_consent(
    session: AsyncSession,
    settings: Settings,
    keyring: DataKeyring,
    http: httpx.AsyncClient,
    *,
    state: str,
    code: str | None,
    error: str | None,
    now: datetime,
) -> Consent:
    """The bank's redirect: check the state, exchange the code, activate (commits).

    Raises Problem for a forged, replayed or expired state only. A refusal at the bank
    (`access_denied`, or nothing granted) makes the consent `refused`; a token endpoint
    that fails or times out leaves it `pending` with `last_error` and the code kept
    (sealed) for the exchange job to retry (see ``exchange_code``); a code the bank
    rejects (`invalid_grant`) makes it `expired`.
    """
    repository = ConsentRepository(session)
    consent = await repository.by_state(_state_hash(state)) if state else None
    if consent is None or consent.status != "pending":
        raise Problem(
            400,
            "invalid_state",
            "Unknown or already used state",
            "This authorization response matches no pending consent; ask for a new consent.",
        )
    consent.state_hash = None  # single use, whatever happens next
    consent.updated_at = now
    if consent.state_expires_at < now:
        consent.status = "expired"
        _purge(consent)
        _audit(session, consent, actor="psu", action="state_expired", now=now)
        await session.commit()
        raise Problem(400, "state_expired", "Consent request expired", "Ask for a new consent.")
    if error is not None or not code:
        consent.status = "refused"
        _purge(consent)
        _audit(
            session,
            consent,
            actor="psu",
            action="refused",
            now=now,
            detail={"error": (error or "no code")[:64]},
        )
        await session.commit()
        return consent
    verifier = str(_open_tokens(keyring, consent).get("code_verifier", ""))
    # Kept sealed until the exchange succeeds: the user did consent, and a bank whose
    # token endpoint is down for a moment must not cost the company a second round.
    _seal_tokens(keyring, consent, {"code_verifier": verifier, "code": code})
    consent.code_expires_at = now + timedelta(seconds=settings.consent_code_seconds)
    # A failing token endpoint is committed as pending with last_error: the caller queues
    # the retry.
    with contextlib.suppress(TokenEndpointError):
        await _exchange(session, settings, keyring, http, consent, now)
    return consent


async def _exchange(
    session: AsyncSession,
    settings: Settings,
    keyring: DataKeyring,
    http: httpx.AsyncClient,
    consent: Consent,
    now: datetime,
) -> None:
    """Exchange the pending consent's sealed code for tokens, and commit what came of it.

    Raises TokenEndpointError after committing `last_error` when the bank's token
    endpoint failed or timed out (the consent stays pending, its code kept).
    """
    sealed = _open_tokens(keyring, consent)
    bank = bank_of(settings, consent.mode, consent.bank_id)
    try:
        body = await _token_call(
            http,
            settings,
            bank,
            {
                "grant_type": "authorization_code",
                "code": str(sealed.get("code", "")),
                "code_verifier": str(sealed.get("code_verifier", "")),
                "redirect_uri": settings.consent_callback_url,
            },
        )
    except TokenEndpointError as failure:
        consent.last_error = f"token endpoint: {failure}"[:200]
        consent.updated_at = now
        _audit(
            session,
            consent,
            actor="bank",
            action="token_exchange_failed",
            now=now,
            detail={"reason": str(failure)[:120], "retried": True},
        )
        await session.commit()
        raise
    except BankRevoked as rejected:
        # The bank will never take this code (used, expired, or not ours): the consent
        # cannot complete. Not a refusal: the company's user did consent.
        consent.status = "expired"
        consent.last_error = f"code rejected by the bank: {rejected}"[:200]
        consent.updated_at = now
        _purge(consent)
        consent.code_expires_at = None
        _audit(
            session,
            consent,
            actor="bank",
            action="code_rejected",
            now=now,
            detail={"reason": str(rejected)[:120]},
        )
        await session.commit()
        return
    granted = sorted(set(str(body.get("scope", "")).split()) & set(consent.requested_scopes))
    consent.updated_at = now
    consent.code_expires_at = None
    consent.last_error = None
    if not granted:
        consent.status = "refused"
        _purge(consent)
        _audit(session, consent, actor="psu", action="refused", now=now)
        await session.commit()
        return
    validity = timedelta(days=settings.consent_validity_days)
    bank_says = body.get("consent_expires_in")
    if isinstance(bank_says, int) and bank_says > 0:
        validity = min(validity, timedelta(seconds=bank_says))  # the bank may grant less
    consent.status = "active"
    consent.granted_scopes = granted
    consent.activated_at = now
    consent.expires_at = now + validity
    _apply_tokens(keyring, settings, consent, body, now)
    _audit(session, consent, actor="psu", action="activated", now=now)
    await session.commit()


async def exchange_code(
    sessions: SessionOpener,
    settings: Settings,
    keyring: DataKeyring,
    http: httpx.AsyncClient,
    consent_id: str,
    now: datetime,
) -> str:
    """Retry the code exchange of a pending consent (the job); its status after.

    Raises TokenEndpointError while the bank's token endpoint keeps failing and the code
    has not expired (the job retries with backoff); past the code's life the consent
    expires.
    """
    async with opened_session(sessions) as session:
        consent = await ConsentRepository(session).locked(consent_id)
        if consent is None or consent.status != "pending" or consent.code_expires_at is None:
            return "skipped"  # done meanwhile (another try, a revocation)
        if consent.code_expires_at <= now:
            _expire_unexchanged(session, consent, now)
            await session.commit()
            return consent.status
        await _exchange(session, settings, keyring, http, consent, now)
        return consent.status


def _expire_unexchanged(session: AsyncSession, consent: Consent, now: datetime) -> None:
    """A pending consent whose code could not be exchanged in its life: expired."""
    consent.status = "expired"
    consent.last_error = (
        f"code expired before the exchange succeeded ({consent.last_error or 'no answer'})"
    )[:200]
    consent.updated_at = now
    consent.code_expires_at = None
    _purge(consent)
    _audit(session, consent, actor="system", action="code_expired", now=now)


def lender_redirect(consent: Consent) -> str:
    """Where the company's user goes back to: the lender's URI with id and status."""
    separator = "&" if "?" in consent.redirect_uri else "?"
    params = urlencode({"consent_id": consent.id, "status": consent.status})
    return f"{consent.redirect_uri}{separator}{params}"


# --- revocation, expiry, purge --------------------------------------------------------------


async def revoke_consent(
    session: AsyncSession,
    settings: Settings,
    keyring: DataKeyring,
    http: httpx.AsyncClient,
    consent: Consent,
    *,
    actor: str,
    now: datetime,
) -> Consent:
    """Revoke at the bank where it can be, purge tokens and data at once (commits)."""
    if consent.status in ("revoked", "refused"):
        return consent
    tokens = _open_tokens(keyring, consent)
    revoked_at_bank = False
    bank = load_directory(settings.open_banking_banks_file).get(consent.bank_id)
    refresh = tokens.get("refresh_token")
    if bank is not None and bank.revocation_endpoint and isinstance(refresh, str):
        url = bank.endpoint(bank.revocation_endpoint, _sandbox_url(settings, bank)) or ""
        try:
            response = await http.post(
                url,
                data={"token": refresh, "client_id": settings.open_banking_client_id},
                timeout=settings.consent_token_timeout_seconds,
            )
            revoked_at_bank = response.status_code == 200
        except httpx.HTTPError as error:
            # Our side is revoked whatever the bank says: no token is left to use.
            log.warning("revocation at bank %s failed: %s", consent.bank_id, type(error).__name__)
    consent.status = "revoked"
    consent.updated_at = now
    consent.purge_after = now
    _purge(consent)
    _audit(
        session,
        consent,
        actor=actor,
        action="revoked",
        now=now,
        detail={"revoked_at_bank": revoked_at_bank},
    )
    await _emit(session, consent, "consent.revoked", now)
    await session.commit()
    forget_snapshot(consent.id)
    return consent


async def _expire(
    session: AsyncSession,
    settings: Settings,
    consent: Consent,
    *,
    actor: str,
    now: datetime,
    purge_now: bool,
    reason: str,
) -> None:
    consent.status = "expired"
    consent.updated_at = now
    consent.purge_after = now + timedelta(days=settings.consent_retention_days)
    if purge_now:
        consent.purge_after = now
        _purge(consent)
    else:
        # Tokens are of no use past expiry; the data waits for the retention to end.
        consent.tokens_key_id = consent.tokens_nonce = consent.tokens_ciphertext = None
    _audit(session, consent, actor=actor, action="expired", now=now, detail={"reason": reason})
    await _emit(session, consent, "consent.expired", now)
    forget_snapshot(consent.id)


async def sweep(sessions: SessionOpener, settings: Settings, now: datetime) -> dict[str, int]:
    """Expire stale pending and due consents, announce expiring ones, purge (commits)."""
    counts = {"expiring": 0, "expired": 0, "purged": 0}
    notice = now + timedelta(days=settings.consent_expiring_notice_days)
    async with opened_session(sessions) as session:
        repository = ConsentRepository(session)
        for consent in await repository.stale_pending(now, 500):
            if consent.code_expires_at is not None:
                _expire_unexchanged(session, consent, now)
            else:
                consent.status = "expired"
                consent.updated_at = now
                _purge(consent)
                _audit(session, consent, actor="system", action="state_expired", now=now)
            counts["expired"] += 1
        for consent in await repository.expired(now, 500):
            await _expire(
                session,
                settings,
                consent,
                actor="system",
                now=now,
                purge_now=False,
                reason="validity ended",
            )
            counts["expired"] += 1
        for consent in await repository.expiring(notice, 500):
            consent.expiring_notified = True
            consent.updated_at = now
            _audit(session, consent, actor="system", action="expiring", now=now)
            await _emit(session, consent, "consent.expiring", now)
            counts["expiring"] += 1
        for consent in await repository.to_purge(now, 500):
            _purge(consent)
            consent.updated_at = now
            _audit(session, consent, actor="system", action="purged", now=now)
            forget_snapshot(consent.id)
            counts["purged"] += 1
        await session.commit()
    return counts


# --- sync ------------------------------------------------------------------------------------


def _snapshot_json(data: BankData, scopes: list[str]) -> dict[str, Any]:
    # Minimised: tokens instead of identifiers, no remittance text (the rejected-debit flag
    # is what the features read of it), only what the granted scopes brought.
    return {
        "as_of": data.as_of.isoformat(),
        "scopes": scopes,
        "accounts": [
            {
                "token": a.account_token,
                "iban_token": a.iban_token,
                "type": a.cash_account_type,
                "currency": a.currency,
                "balance": None if a.balance is None else str(a.balance),
                "transactions": [
                    [t.booking_date.isoformat(), str(t.amount), t.status, t.rejected_debit]
                    for t in a.transactions
                ],
            }
            for a in data.accounts
        ],
    }


def snapshot_data(doc: dict[str, Any]) -> BankData:
    """The BankData the features read, from a decrypted snapshot document."""
    granted = "transactions" in doc["scopes"]
    return BankData(
        as_of=date.fromisoformat(doc["as_of"]),
        accounts=tuple(
            BankAccount(
                account_token=a["token"],
                iban_token=a["iban_token"],
                cash_account_type=a["type"],
                balance=None
                if a["balance"] is None or "balances" not in doc["scopes"]
                else Decimal(a["balance"]),
                currency=a["currency"],
                transactions=tuple(
                    BankTransaction(
                        booking_date=date.fromisoformat(day),
                        amount=Decimal(amount),
                        status=status,
                        remittance="",
                        rejected_debit=rejected,
                    )
                    for day, amount, status, rejected in a["transactions"]
                ),
            )
            for a in doc["accounts"]
        ),
        transactions_granted=granted,
    )


def _merged(
    previous: dict[str, Any] | None,
    fresh: dict[str, Any],
    date_from: date | None,
    history_days: int,
) -> dict[str, Any]:
    """fresh, completed by the previous snapshot's booked entries from before date_from."""
    oldest = (date.fromisoformat(fresh["as_of"]) - timedelta(days=history_days)).isoformat()
    if previous is not None and date_from is not None:
        before = date_from.isoformat()
        earlier = {a["token"]: a["transactions"] for a in previous["accounts"]}
        for account in fresh["accounts"]:
            kept = [
                t for t in earlier.get(account["token"], ()) if t[0] < before and t[2] == "BOOK"
            ]
            account["transactions"] = account["transactions"] + kept
    for account in fresh["accounts"]:
        account["transactions"] = [t for t in account["transactions"] if t[0] >= oldest]
        account["transactions"].sort(key=lambda t: t[0], reverse=True)
    return fresh


@dataclass(frozen=True, slots=True)
class SyncTools:
    """What a sync uses: stores, keys and the banks' clients per mode."""

    settings: Settings
    sessions: SessionOpener
    keyring: DataKeyring
    tokenizer: Tokenizer
    sandbox_clients: ProviderClients | None
    live_clients: ProviderClients | None
    http: httpx.AsyncClient


async def _refresh_if_due(
    tools: SyncTools, consent_id: str, now: datetime
) -> tuple[Consent, dict[str, Any]] | None:
    """The active consent and its tokens, refreshed first when they expire soon (commits)."""
    settings, keyring = tools.settings, tools.keyring
    async with opened_session(tools.sessions) as session:
        consent = await ConsentRepository(session).locked(consent_id)
        if consent is None or consent.status != "active":
            return None
        if consent.expires_at is not None and consent.expires_at <= now:
            await _expire(
                session,
                settings,
                consent,
                actor="system",
                now=now,
                purge_now=False,
                reason="validity ended",
            )
            await session.commit()
            return None
        tokens = _open_tokens(keyring, consent)
        margin = timedelta(seconds=settings.consent_refresh_margin_seconds)
        if consent.access_expires_at is not None and consent.access_expires_at - margin <= now:
            refresh = tokens.get("refresh_token")
            bank = bank_of(settings, consent.mode, consent.bank_id)
            try:
                if not isinstance(refresh, str):
                    raise BankRevoked("no refresh token")
                body = await _token_call(
                    tools.http,
                    settings,
                    bank,
                    {"grant_type": "refresh_token", "refresh_token": refresh},
                )
            except BankRevoked as revoked:
                await _expire(
                    session,
                    settings,
                    consent,
                    actor="bank",
                    now=now,
                    purge_now=True,
                    reason=f"refresh refused: {revoked}"[:120],
                )
                await session.commit()
                return None
            if body.get("refresh_token") is None:
                body["refresh_token"] = refresh  # banks that keep the refresh token omit it
            _apply_tokens(keyring, settings, consent, body, now)
            consent.updated_at = now
            _audit(session, consent, actor="system", action="refreshed", now=now)
            await session.commit()
            tokens = _open_tokens(keyring, consent)
        session.expunge(consent)
        return consent, tokens


async def sync_consent(tools: SyncTools, consent_id: str, now: datetime) -> str:
    """Fetch the granted data since the last sync into a new snapshot; the outcome.

    Raises SourceError or TokenEndpointError on a transient failure (the job retries); the
    previous snapshot stays in place and usable until it is too old.
    """
    started = time.perf_counter()
    outcome = "failed"
    try:
        outcome = await _sync(tools, consent_id, now)
        return outcome
    finally:
        CONSENT_SYNCS.labels(outcome).observe(time.perf_counter() - started)


async def _sync(tools: SyncTools, consent_id: str, now: datetime) -> str:
    settings, keyring = tools.settings, tools.keyring
    ready = await _refresh_if_due(tools, consent_id, now)
    if ready is None:
        return "skipped"
    consent, tokens = ready
    clients = tools.sandbox_clients if consent.mode == "test" else tools.live_clients
    client = clients.banks.get(consent.bank_id) if clients is not None else None
    if client is None:
        raise SourceUnavailable(f"bank {consent.bank_id} not configured")
    previous = _read_snapshot(keyring, consent)
    date_from = None
    if previous is not None and consent.last_synced_at is not None:
        date_from = (consent.last_synced_at - SYNC_OVERLAP).date()
    scopes = list(consent.granted_scopes)
    access = str(tokens.get("access_token", ""))
    try:
        holder = None
        if "identity" in scopes:
            holder = await fetch_identity(client, access)
        raw = await fetch_open_banking(
            client,
            access,
            now=now,
            transactions="transactions" in scopes,
            date_from=None
            if date_from is None
            else datetime(date_from.year, date_from.month, date_from.day, tzinfo=now.tzinfo),
            call_timeout=settings.consent_sync_call_timeout_seconds,
        )
    except SourceUnavailable as denied:
        # 401/403 from the bank: it no longer honours the consent.
        async with opened_session(tools.sessions) as session:
            locked = await ConsentRepository(session).locked(consent_id)
            if locked is not None and locked.status == "active":
                await _expire(
                    session,
                    settings,
                    locked,
                    actor="bank",
                    now=now,
                    purge_now=True,
                    reason=denied.reason[:120],
                )
                await session.commit()
        return "revoked_by_bank"
    data = parse_raw(raw, tools.tokenizer, now.date())
    doc = _merged(
        previous, _snapshot_json(data, scopes), date_from, settings.open_banking_history_days
    )
    if holder is not None:
        doc["holder"] = holder  # asked only under the identity scope
    async with opened_session(tools.sessions) as session:
        locked = await ConsentRepository(session).locked(consent_id)
        if locked is None or locked.status != "active":
            return "skipped"  # revoked while we read the bank: keep nothing
        key_id, nonce, ciphertext = keyring.encrypt(orjson.dumps(doc), _aad("snapshot", locked))
        # One UPDATE in one transaction: a reader sees the old snapshot or the new, whole.
        locked.snapshot_key_id, locked.snapshot_nonce, locked.snapshot_ciphertext = (
            key_id,
            nonce,
            ciphertext,
        )
        locked.snapshot_at = now
        locked.last_synced_at = now
        locked.accounts = [a["token"] for a in doc["accounts"]]
        locked.updated_at = now
        await session.commit()
    consent_index(tools.sessions, settings.consent_index_seconds).add(
        locked.tenant_id, locked.mode, locked.siren
    )
    return "synced"


def _read_snapshot(keyring: DataKeyring, consent: Consent) -> dict[str, Any] | None:
    if consent.snapshot_ciphertext is None or consent.snapshot_nonce is None:
        return None
    plain = keyring.decrypt(
        consent.snapshot_key_id or "",
        consent.snapshot_nonce,
        consent.snapshot_ciphertext,
        _aad("snapshot", consent),
    )
    doc: dict[str, Any] = orjson.loads(plain)
    return doc


# --- the score path ---------------------------------------------------------------------------

# Kept of the source's budget when a stale snapshot can stand in for a bank that is slow:
# the bank's answer is cut this much before the deadline, so that the snapshot still
# makes it in time.
STALE_MARGIN_SECONDS = 0.02
# A token this close to its expiry is not used in a decision (the sync refreshes it).
ACCESS_MARGIN = timedelta(seconds=10)
# A decision that finds a consent's data stale queues its sync at most this often per
# process (the queueing lock would dedup anyway, at one database round trip each).
SYNC_NUDGE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decrypted snapshot ready for the features, and what the answer says of it."""

    consent_id: str
    snapshot_at: datetime
    scopes: tuple[str, ...]
    data: BankData
    packed: bytes  # the normalised snapshot, packed once for the audit row


# Decrypted and parsed once per (consent, sync): decisions on the same company reuse it
# (and the bank features derived from it).
_SNAPSHOTS: OrderedDict[tuple[str, datetime], Snapshot] = OrderedDict()


def forget_snapshot(consent_id: str) -> None:
    """Drop a consent's decrypted snapshots from this process (revoked, expired, purged)."""
    for key in [k for k in _SNAPSHOTS if k[0] == consent_id]:
        del _SNAPSHOTS[key]


class ConsentIndex:
    """Which (tenant, mode, SIREN) have an active consent, in this process.

    Read whole from the database at most every ``ttl`` seconds (in the background once
    loaded), so that a decision on a company without consent costs a set lookup, not a
    round trip. A consent activated in another process is seen within ``ttl``; one revoked
    is never served, because the consent read itself checks the status.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._keys: frozenset[tuple[str, str, str]] | None = None
        self._loaded_at = 0.0
        self._loading: asyncio.Task[None] | None = None

    async def _load(self, sessions: SessionOpener) -> None:
        try:
            async with opened_session(sessions) as session:
                keys = await ConsentRepository(session).active_keys()
        except Exception as error:  # the store down: keep what is known, retry next time
            log.warning("consent index not reloaded: %s", type(error).__name__)
            self._loaded_at = time.monotonic()
            return
        self._keys = frozenset(keys)
        self._loaded_at = time.monotonic()

    def add(self, tenant_id: str, mode: str, siren: str) -> None:
        """Note a consent activated (or synced) by this process (seen at once here)."""
        if self._keys is not None:
            self._keys = self._keys | {(tenant_id, mode, siren)}

    async def has(self, sessions: SessionOpener, tenant_id: str, mode: str, siren: str) -> bool:
        """True when the company may have an active consent for this tenant and mode."""
        if self._keys is None:
            await self._load(sessions)
        elif time.monotonic() - self._loaded_at > self.ttl and (
            self._loading is None or self._loading.done()
        ):
            self._loading = asyncio.create_task(self._load(sessions))
        return self._keys is not None and (tenant_id, mode, siren) in self._keys


_INDEXES: dict[int, ConsentIndex] = {}


def consent_index(sessions: SessionOpener, ttl: float) -> ConsentIndex:
    """The process's index for one database (one per session factory)."""
    index = _INDEXES.get(id(sessions))
    if index is None:
        index = _INDEXES[id(sessions)] = ConsentIndex(ttl)
    return index


@dataclass(frozen=True, slots=True)
class ConsentOnFile:
    """A company's active consent as a decision reads it (one indexed read)."""

    consent_id: str
    bank_id: str
    scopes: tuple[str, ...]
    snapshot: Snapshot | None  # the latest synced snapshot, fresh or not
    access_token: str | None  # None: none held, or about to expire (the sync refreshes)


def _decrypted_snapshot(keyring: DataKeyring, tenant_id: str, row: Any) -> Snapshot:
    key = (row.id, row.snapshot_at)
    cached = _SNAPSHOTS.get(key)
    if cached is not None:
        _SNAPSHOTS.move_to_end(key)
        return cached
    aad = f"b2bscore.consent_snapshot.v1|{tenant_id}|{row.id}".encode()
    doc = orjson.loads(
        keyring.decrypt(row.snapshot_key_id or "", row.snapshot_nonce, row.snapshot_ciphertext, aad)
    )
    # The holder's name is for the lender's KYB (GET /v1/consents), not a feature: it does
    # not feed decisions, so no audit row keeps it.
    doc.pop("holder", None)
    snapshot = Snapshot(
        consent_id=row.id,
        snapshot_at=row.snapshot_at,
        scopes=tuple(row.granted_scopes),
        data=snapshot_data(doc),
        packed=pack_json(doc),
    )
    _SNAPSHOTS[key] = snapshot
    if len(_SNAPSHOTS) > SNAPSHOT_CACHE_SIZE:
        _SNAPSHOTS.popitem(last=False)
    return snapshot


async def consent_on_file(
    sessions: SessionOpener,
    keyring: DataKeyring,
    *,
    tenant_id: str,
    mode: str,
    siren: str,
    now: datetime,
    max_age: timedelta,
    index_ttl: float = 5.0,
) -> ConsentOnFile | None:
    """The company's active consent with the freshest snapshot; None when it has none.

    The access token is decrypted only when the snapshot is missing or older than
    max_age (a decision then asks the bank with it).
    """
    if not await consent_index(sessions, index_ttl).has(sessions, tenant_id, mode, siren):
        return None
    async with opened_session(sessions) as session:
        row = await ConsentRepository(session).for_decision(tenant_id, mode, siren)
    if row is None:
        return None
    snapshot = None
    if row.snapshot_ciphertext is not None and row.snapshot_at is not None:
        snapshot = _decrypted_snapshot(keyring, tenant_id, row)
    token = None
    if (
        (snapshot is None or now - snapshot.snapshot_at > max_age)
        and row.tokens_ciphertext is not None
        and row.access_expires_at is not None
        and row.access_expires_at > now + ACCESS_MARGIN
    ):
        aad = f"b2bscore.consent_tokens.v1|{tenant_id}|{row.id}".encode()
        tokens = orjson.loads(
            keyring.decrypt(row.tokens_key_id or "", row.tokens_nonce, row.tokens_ciphertext, aad)
        )
        access = tokens.get("access_token")
        token = access if isinstance(access, str) else None
    return ConsentOnFile(
        consent_id=row.id,
        bank_id=row.bank_id,
        scopes=tuple(row.granted_scopes),
        snapshot=snapshot,
        access_token=token,
    )


@dataclass(frozen=True, slots=True)
class DecisionConsents:
    """What a decision needs to use a lender's consents: stores, keys, banks, jobs."""

    settings: Settings
    sessions: SessionOpener
    keyring: DataKeyring
    tokenizer: Tokenizer
    clients: ProviderClients | None  # the banks of the decision's mode
    jobs: Jobs | None


_NUDGED: dict[str, float] = {}
_NUDGES: set[asyncio.Task[bool]] = set()


def _nudge_sync(jobs: Jobs | None, consent_id: str) -> None:
    """Queue the consent's sync beside the decision (never in its way), at most so often."""
    if jobs is None:
        return
    at = time.monotonic()
    if at - _NUDGED.get(consent_id, -SYNC_NUDGE_SECONDS) < SYNC_NUDGE_SECONDS:
        return
    _NUDGED[consent_id] = at
    if len(_NUDGED) > SNAPSHOT_CACHE_SIZE:
        _NUDGED.clear()
    task = asyncio.create_task(queue_sync(jobs, consent_id))
    _NUDGES.add(task)
    task.add_done_callback(_nudged)


def _nudged(task: asyncio.Task[bool]) -> None:
    _NUDGES.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("consent sync not queued: %s", type(error).__name__)


def _from_snapshot(snapshot: Snapshot, now: datetime, stale_because: str | None) -> ConsentedBank:
    info = {
        "consent_id": snapshot.consent_id,
        "age_seconds": round((now - snapshot.snapshot_at).total_seconds(), 1),
        "scopes": list(snapshot.scopes),
        "source": "snapshot",
        "stale": stale_because is not None,
    }
    detail = "snapshot" if stale_because is None else f"stale snapshot (bank: {stale_because})"
    return ConsentedBank(
        data=snapshot.data,
        packed=snapshot.packed,
        detail=detail[:160],
        info=info,
        stale=stale_because is not None,
    )


class ConsentNotUsableNow(SourceUpstreamError):
    """The consent cannot be used in this decision (bank not configured, token due for
    refresh): nothing was asked of the bank."""


async def _from_bank(
    tools: DecisionConsents, found: ConsentOnFile, deadline: float, now: datetime
) -> ConsentedBank:
    """The consent's granted data asked of its bank now, cut before the deadline."""
    clients = tools.clients
    client = clients.banks.get(found.bank_id) if clients is not None else None
    if client is None:
        # Our configuration, not the bank's refusal: a stale snapshot may stand in.
        raise ConsentNotUsableNow(f"bank {found.bank_id} not configured")
    if found.access_token is None:
        raise ConsentNotUsableNow("access token due for refresh")
    cut = deadline - STALE_MARGIN_SECONDS
    left = cut - time.monotonic()
    if left <= 0:
        raise SourceTimeout("deadline")
    fetch = fetch_open_banking(
        client,
        found.access_token,
        deadline=cut,
        now=now,
        transactions="transactions" in found.scopes,
    )
    try:
        raw = await asyncio.wait_for(fetch, timeout=left)
    except TimeoutError as error:
        raise SourceTimeout("deadline") from error
    # Minimised as a snapshot is (tokens, no remittance text), and what is recorded in
    # the audit row is exactly what the features read.
    doc = _snapshot_json(parse_raw(raw, tools.tokenizer, now.date()), list(found.scopes))
    return ConsentedBank(
        data=snapshot_data(doc),
        packed=pack_json(doc),
        detail="bank (consent)",
        info={
            "consent_id": found.consent_id,
            "age_seconds": 0.0,
            "scopes": list(found.scopes),
            "source": "bank",
            "stale": False,
        },
    )


async def consented_bank(
    tools: DecisionConsents, *, tenant_id: str, mode: str, siren: str, deadline: float
) -> ConsentedBank | None:
    """A decision's bank data under the lender's consent; None when it holds none.

    The fresh snapshot when there is one. Else (stale, or not synced yet) the consent's
    bank is asked now with its token, cut before deadline (time.monotonic()), and a sync
    is queued; if the bank fails or is too slow, the stale snapshot stands in (its age
    shown, the answer degraded), or the failure is the source's status. A bank that
    refuses the token (401/403) is never overruled by the snapshot.
    """
    settings = tools.settings
    now = datetime.now(UTC)
    try:
        found = await consent_on_file(
            tools.sessions,
            tools.keyring,
            tenant_id=tenant_id,
            mode=mode,
            siren=siren,
            now=now,
            max_age=timedelta(seconds=settings.consent_snapshot_max_age_seconds),
            index_ttl=settings.consent_index_seconds,
        )
    except Exception as error:  # an unreadable store or row: the bank is asked as without
        log.warning("consent unreadable for %s: %s", siren, type(error).__name__)
        return None
    if found is None:
        return None
    snapshot = found.snapshot
    max_age = timedelta(seconds=settings.consent_snapshot_max_age_seconds)
    if snapshot is not None and now - snapshot.snapshot_at <= max_age:
        return _from_snapshot(snapshot, now, stale_because=None)
    _nudge_sync(tools.jobs, found.consent_id)
    try:
        return await _from_bank(tools, found, deadline, now)
    except SourceUnavailable:
        raise  # the bank refuses the consent: the sync just queued expires it
    except ConsentNotUsableNow as unusable:
        if snapshot is None:
            # Nothing asked, nothing on file: the decision goes on as without a consent
            # (the queued sync makes the next one use it).
            return None
        return _from_snapshot(snapshot, now, stale_because=unusable.reason)
    except SourceError as failure:
        if snapshot is None:
            raise
        return _from_snapshot(snapshot, now, stale_because=failure.reason)


async def allow_redirect(
    session: AsyncSession, tenant_id: str, mode: str, uri: str, now: datetime
) -> None:
    """Put a redirect_uri on a tenant's allow-list (https only for live; caller commits)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise ValueError("a redirect_uri is an absolute http(s) URL without fragment")
    if mode == "live" and parts.scheme != "https":
        raise ValueError("a live redirect_uri must be https")
    await ConsentRepository(session).allow_redirect(tenant_id, mode, uri, now)
