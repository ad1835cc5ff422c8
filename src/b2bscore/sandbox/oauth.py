"""The sandbox banks' authorization servers: consent page, token endpoint, revocation.

Each sandbox bank of the directory (``/oauth/{bank}/...``) plays the PSD2 redirect flow as
an ASPSP does: OAuth2 authorization code with PKCE (S256 only), a real HTML consent page
where the company's user ticks the accounts and data categories it shares (micro-consent:
less than was asked may be granted) and accepts or refuses, refresh tokens, and RFC 7009
revocation. Access tokens it issues are accepted by its STET API for the granted accounts
and categories only (see ``Grants.grant_of``). The PSU is named by ``login_hint`` (the
SIREN): the sandbox has no bank login.

Pending pages, codes, grants and tokens live in a small SQLite file (``GrantStore``,
B2BSCORE_SANDBOX_GRANTS_FILE, default var/sandbox_grants.sqlite3) that every process of
the sandbox opens: a code issued by one worker process is exchanged at another, a token
revoked at one is refused by all, and the test controls (token endpoint fault) reach
them all. Removing the file revokes everything, as a bank that forgot its grants would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from b2bscore.sources.banks import SANDBOX_BANKS
from b2bscore.training.world import Company

# STET's AISP consent: balances and transactions per account, and psuIdentity (GET
# /end-user-identity: who the connected PSU is).
SCOPES = ("balances", "transactions", "identity")
ACCESS_TOKEN_SECONDS = 3600
CODE_SECONDS = 120
PAGE_SECONDS = 600
# PSD2's 180 days, but the STET 1.6 sandbox bank grants 90: the service must take the less.
CONSENT_DAYS = {"sandbox-stet14": 180, "sandbox-stet16": 90}
CSRF_COOKIE = "bank_csrf"
TokenFault = Literal["error", "timeout"] | None
ENV_FILE: Final = "B2BSCORE_SANDBOX_GRANTS_FILE"
# Expired pages, codes and access tokens are swept at most this often per process.
SWEEP_SECONDS = 60.0


def default_path() -> Path:
    """The grant store's path: B2BSCORE_SANDBOX_GRANTS_FILE, else under B2BSCORE_VAR_DIR."""
    explicit = os.environ.get(ENV_FILE)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("B2BSCORE_VAR_DIR", "var")) / "sandbox_grants.sqlite3"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a company's user agreed to share with one client, at one bank."""

    id: str
    bank: str
    siren: str
    client_id: str
    accounts: frozenset[str]
    scopes: frozenset[str]
    consent_expires_at: float
    refresh_token: str


@dataclass(frozen=True, slots=True)
class Pending:
    """A consent page shown, waiting for the user's answer."""

    bank: str
    siren: str
    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scopes: frozenset[str]
    csrf: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """An authorization code as the token endpoint checks it."""

    grant: Grant
    redirect_uri: str
    code_challenge: str
    expires_at: float
    first_use: bool  # False: it was used before (RFC 6749 4.1.2: revoke what it gave)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY, doc BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY, bank TEXT NOT NULL, siren TEXT NOT NULL, doc BLOB NOT NULL,
    refresh_token TEXT NOT NULL UNIQUE, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS grants_siren ON grants (siren);
CREATE TABLE IF NOT EXISTS codes (
    code TEXT PRIMARY KEY, grant_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL, expires_at REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS access (
    token TEXT PRIMARY KEY, grant_id TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS controls (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _grant_doc(grant: Grant) -> bytes:
    return orjson.dumps(
        {
            "client_id": grant.client_id,
            "accounts": sorted(grant.accounts),
            "scopes": sorted(grant.scopes),
            "consent_expires_at": grant.consent_expires_at,
        }
    )


def _grant(row: sqlite3.Row) -> Grant:
    doc = orjson.loads(row["doc"])
    return Grant(
        id=row["id"],
        bank=row["bank"],
        siren=row["siren"],
        client_id=doc["client_id"],
        accounts=frozenset(doc["accounts"]),
        scopes=frozenset(doc["scopes"]),
        consent_expires_at=doc["consent_expires_at"],
        refresh_token=row["refresh_token"],
    )


class Grants:
    """Every pending page, code, grant and token of the sandbox banks, in one SQLite file.

    Calls are short local statements (WAL, a busy timeout for the moments another process
    writes), made under a lock since a sandbox process may serve from more than one thread.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self._swept = 0.0
        self.access_token_seconds = ACCESS_TOKEN_SECONDS

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            self._db.close()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    def _sweep(self) -> None:
        now = time.time()
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE expires_at < ?", (now,))
            self._db.execute("DELETE FROM codes WHERE expires_at < ?", (now - CODE_SECONDS,))
            self._db.execute("DELETE FROM access WHERE expires_at < ?", (now,))

    # --- test controls -------------------------------------------------------------------

    @property
    def token_outage(self) -> TokenFault:
        """The fault every token endpoint plays ("error", "timeout"), or None."""
        row = self._run("SELECT value FROM controls WHERE name = 'token_outage'").fetchone()
        value = row["value"] if row is not None else ""
        return "error" if value == "error" else "timeout" if value == "timeout" else None

    def set_token_outage(self, fault: TokenFault) -> None:
        """Make every token endpoint (of every process) fail, hang, or work."""
        self._run(
            "INSERT INTO controls (name, value) VALUES ('token_outage', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (fault or "",),
        )

    # --- the flow --------------------------------------------------------------------------

    def add_pending(self, pending: Pending) -> str:
        """Keep a consent page's request; its id."""
        self._sweep()
        pending_id = secrets.token_urlsafe(16)
        doc = orjson.dumps(_pending_doc(pending))
        self._run(
            "INSERT INTO pending (id, doc, expires_at) VALUES (?, ?, ?)",
            (pending_id, doc, pending.expires_at),
        )
        return pending_id

    def pending(self, pending_id: str) -> Pending | None:
        """A consent page's request, if still there."""
        row = self._run("SELECT doc FROM pending WHERE id = ?", (pending_id,)).fetchone()
        return None if row is None else _pending(orjson.loads(row["doc"]))

    def take_pending(self, pending_id: str) -> bool:
        """Spend a consent page (one answer per page); False when already answered."""
        return self._run("DELETE FROM pending WHERE id = ?", (pending_id,)).rowcount == 1

    def add_grant(self, grant: Grant, code: str, redirect_uri: str, challenge: str) -> None:
        """Record what the user granted and the code that stands for it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO grants (id, bank, siren, doc, refresh_token) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (grant.id, grant.bank, grant.siren, _grant_doc(grant), grant.refresh_token),
                )
                self._db.execute(
                    "INSERT INTO codes (code, grant_id, redirect_uri, code_challenge, "
                    "expires_at) VALUES (?, ?, ?, ?, ?)",
                    (code, grant.id, redirect_uri, challenge, time.time() + CODE_SECONDS),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def use_code(self, code: str) -> IssuedCode | None:
        """A code and its grant, marked used (first_use says whether it was the first)."""
        with self._lock:
            row = self._db.execute(
                "SELECT c.redirect_uri, c.code_challenge, c.expires_at, g.* FROM codes c "
                "JOIN grants g ON g.id = c.grant_id WHERE c.code = ?",
                (code,),
            ).fetchone()
            if row is None:
                return None
            first = (
                self._db.execute(
                    "UPDATE codes SET used = 1 WHERE code = ? AND used = 0", (code,)
                ).rowcount
                == 1
            )
        return IssuedCode(
            _grant(row), row["redirect_uri"], row["code_challenge"], row["expires_at"], first
        )

    def revoke(self, grant_id: str) -> None:
        """Revoke a grant: its refresh and access tokens stop working everywhere."""
        self._run("UPDATE grants SET revoked = 1 WHERE id = ?", (grant_id,))

    def revoke_siren(self, siren: str) -> int:
        """Revoke every grant of a company (as a PSU can at its bank); how many."""
        return self._run(
            "UPDATE grants SET revoked = 1 WHERE siren = ? AND revoked = 0", (siren,)
        ).rowcount

    def by_refresh(self, refresh_token: str) -> Grant | None:
        """The live (unrevoked) grant of a refresh token."""
        row = self._run(
            "SELECT * FROM grants WHERE refresh_token = ? AND revoked = 0", (refresh_token,)
        ).fetchone()
        return None if row is None else _grant(row)

    def by_token(self, token: str) -> Grant | None:
        """The unrevoked grant behind an access or refresh token, expired or not."""
        grant = self.by_refresh(token)
        if grant is not None:
            return grant
        row = self._run(
            "SELECT g.* FROM access a JOIN grants g ON g.id = a.grant_id "
            "WHERE a.token = ? AND g.revoked = 0",
            (token,),
        ).fetchone()
        return None if row is None else _grant(row)

    def grant_of(self, token: str) -> Grant | None:
        """The live grant behind an access token (None: unknown, expired or revoked)."""
        now = time.time()
        row = self._run(
            "SELECT g.* FROM access a JOIN grants g ON g.id = a.grant_id "
            "WHERE a.token = ? AND a.expires_at >= ? AND g.revoked = 0",
            (token, now),
        ).fetchone()
        if row is None:
            return None
        grant = _grant(row)
        return None if grant.consent_expires_at < now else grant

    def issue(self, grant: Grant) -> dict[str, Any]:
        """A token response for grant (a new access token; the refresh token stays)."""
        self._sweep()
        access = "at-" + secrets.token_urlsafe(24)
        self._run(
            "INSERT INTO access (token, grant_id, expires_at) VALUES (?, ?, ?)",
            (access, grant.id, time.time() + self.access_token_seconds),
        )
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_token_seconds,
            "refresh_token": grant.refresh_token,
            "scope": " ".join(sorted(grant.scopes)),
            # Not OAuth2: what the bank says of the consent's own validity (PSD2).
            "consent_expires_in": max(0, int(grant.consent_expires_at - time.time())),
        }


def _pending_doc(pending: Pending) -> dict[str, Any]:
    return {
        "bank": pending.bank,
        "siren": pending.siren,
        "client_id": pending.client_id,
        "redirect_uri": pending.redirect_uri,
        "state": pending.state,
        "code_challenge": pending.code_challenge,
        "scopes": sorted(pending.scopes),
        "csrf": pending.csrf,
        "expires_at": pending.expires_at,
    }


def _pending(doc: dict[str, Any]) -> Pending:
    return Pending(**{**doc, "scopes": frozenset(doc["scopes"])})


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _page(bank: str, pending_id: str, pending: Pending, company: Company) -> str:
    accounts = "\n".join(
        f'<li><label><input type="checkbox" name="accounts" value="{html.escape(a.resource_id)}"'
        f" checked> {html.escape(a.name)} ({html.escape(a.iban[:4])}…{html.escape(a.iban[-4:])})"
        "</label></li>"
        for a in company.accounts
    )
    categories = "\n".join(
        f'<li><label><input type="checkbox" name="scopes" value="{s}" checked> {s}</label></li>'
        for s in SCOPES
        if s in pending.scopes
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(bank)}: consent</title></head>
<body>
<h1>{html.escape(bank)}</h1>
<p>{html.escape(pending.client_id)} asks to read the accounts of
{html.escape(company.name)} (SIREN {html.escape(pending.siren)}).</p>
<form method="post" action="/oauth/{html.escape(bank)}/authorize">
<input type="hidden" name="request_id" value="{html.escape(pending_id)}">
<input type="hidden" name="csrf_token" value="{html.escape(pending.csrf)}">
<fieldset><legend>Accounts</legend><ul>
{accounts}
</ul></fieldset>
<fieldset><legend>Data</legend><ul>
{categories}
</ul></fieldset>
<button type="submit" name="action" value="accept">Accept</button>
<button type="submit" name="action" value="refuse">Refuse</button>
</form>
</body></html>"""


def _redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
    separator = "&" if "?" in uri else "?"
    return RedirectResponse(uri + separator + urlencode(params), status_code=303)


def oauth_router(grants: Grants, company_of: Any) -> APIRouter:
    """The authorization servers of the sandbox banks (company_of: SIREN -> Company)."""
    router = APIRouter(prefix="/oauth")

    def known(bank: str) -> bool:
        return bank in SANDBOX_BANKS

    @router.get("/{bank}/authorize")
    async def authorize(
        bank: str,
        response_type: str = "",
        client_id: str = "",
        redirect_uri: str = "",
        state: str = "",
        scope: str = "",
        code_challenge: str = "",
        code_challenge_method: str = "",
        login_hint: Annotated[str, Query(pattern=r"^\d{9}$")] = "000000000",
    ) -> Response:
        """The consent page (HTML) of a PSU, after checking the authorization request."""
        if not known(bank):
            return _oauth_error(404, "invalid_request", "unknown bank")
        problems = [
            name
            for name, bad in (
                ("response_type", response_type != "code"),
                ("client_id", not client_id),
                ("redirect_uri", not redirect_uri.startswith(("http://", "https://"))),
                ("state", not state),
                ("code_challenge", len(code_challenge) < 43),
                ("code_challenge_method", code_challenge_method != "S256"),
            )
            if bad
        ]
        scopes = frozenset(scope.split()) & frozenset(SCOPES)
        if not scopes:
            problems.append("scope")
        if problems:
            # Never redirect on a bad request: the redirect_uri itself may be the problem.
            return _oauth_error(400, "invalid_request", "invalid " + ", ".join(problems))
        pending = Pending(
            bank,
            login_hint,
            client_id,
            redirect_uri,
            state,
            code_challenge,
            scopes,
            secrets.token_urlsafe(24),
            time.time() + PAGE_SECONDS,
        )
        pending_id = grants.add_pending(pending)
        page = HTMLResponse(_page(bank, pending_id, pending, company_of(login_hint)))
        page.set_cookie(CSRF_COOKIE, pending.csrf, httponly=True, samesite="strict")
        return page

    @router.post("/{bank}/authorize")
    async def decide(
        request: Request,
        bank: str,
        request_id: Annotated[str, Form()],
        csrf_token: Annotated[str, Form()],
        action: Annotated[str, Form()],
        accounts: Annotated[list[str] | None, Form()] = None,
        scopes: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        """The PSU's answer: redirect to the client with a code, or with access_denied."""
        pending = grants.pending(request_id)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if (
            pending is None
            or pending.bank != bank
            or pending.expires_at < time.time()
            or not hmac.compare_digest(csrf_token, pending.csrf)
            or not hmac.compare_digest(cookie, pending.csrf)
        ):
            return HTMLResponse("<p>This consent request is invalid or expired.</p>", 400)
        if not grants.take_pending(request_id):  # one answer per page
            return HTMLResponse("<p>This consent request was already answered.</p>", 400)
        owned = {a.resource_id for a in company_of(pending.siren).accounts}
        chosen_accounts = frozenset(accounts or ()) & owned
        chosen_scopes = frozenset(scopes or ()) & pending.scopes
        if action != "accept" or not chosen_accounts or not chosen_scopes:
            return _redirect(
                pending.redirect_uri, {"error": "access_denied", "state": pending.state}
            )
        grant = Grant(
            id=secrets.token_urlsafe(16),
            bank=bank,
            siren=pending.siren,
            client_id=pending.client_id,
            accounts=chosen_accounts,
            scopes=chosen_scopes,
            consent_expires_at=time.time() + CONSENT_DAYS[bank] * 86_400,
            refresh_token="rt-" + secrets.token_urlsafe(24),
        )
        code = secrets.token_urlsafe(24)
        grants.add_grant(grant, code, pending.redirect_uri, pending.code_challenge)
        return _redirect(pending.redirect_uri, {"code": code, "state": pending.state})

    @router.post("/{bank}/token")
    async def token(
        request: Request,
        bank: str,
        grant_type: Annotated[str, Form()],
        client_id: Annotated[str, Form()] = "",
        code: Annotated[str, Form()] = "",
        code_verifier: Annotated[str, Form()] = "",
        redirect_uri: Annotated[str, Form()] = "",
        refresh_token: Annotated[str, Form()] = "",
    ) -> Response:
        """Exchange a code (with its PKCE verifier) or a refresh token for tokens."""
        outage = grants.token_outage
        if outage == "error":
            return _oauth_error(503, "temporarily_unavailable", "token service down")
        if outage == "timeout":
            hang_until = time.monotonic() + 30
            while time.monotonic() < hang_until:
                await asyncio.sleep(0.05)
                if await request.is_disconnected():
                    break
            return Response(status_code=504)
        if grant_type == "authorization_code":
            issued = grants.use_code(code)
            if issued is None or issued.grant.bank != bank:
                return _oauth_error(400, "invalid_grant", "unknown code")
            if not issued.first_use:
                # RFC 6749 4.1.2: a code used twice revokes what it gave.
                grants.revoke(issued.grant.id)
                return _oauth_error(400, "invalid_grant", "code already used")
            if (
                issued.expires_at < time.time()
                or issued.redirect_uri != redirect_uri
                or issued.grant.client_id != client_id
                or not hmac.compare_digest(s256(code_verifier), issued.code_challenge)
            ):
                return _oauth_error(400, "invalid_grant", "code, client, redirect or verifier")
            return JSONResponse(grants.issue(issued.grant))
        if grant_type == "refresh_token":
            grant = grants.by_refresh(refresh_token)
            if grant is None or grant.bank != bank:
                return _oauth_error(400, "invalid_grant", "unknown or revoked refresh token")
            if grant.consent_expires_at < time.time():
                return _oauth_error(400, "invalid_grant", "consent expired")
            return JSONResponse(grants.issue(grant))
        return _oauth_error(400, "unsupported_grant_type", grant_type)

    @router.post("/{bank}/revoke")
    async def revoke(bank: str, token: Annotated[str, Form()]) -> Response:
        """RFC 7009: revoke the grant behind an access or refresh token (200 either way)."""
        grant = grants.by_token(token)
        if grant is not None and grant.bank == bank:
            grants.revoke(grant.id)
        return Response(status_code=200)

    @router.put("/_admin/token-fault")
    async def token_fault(fault: Annotated[str, Query()] = "") -> Response:
        """Make every token endpoint fail ("error"), hang ("timeout") or work ("")."""
        faults: dict[str, TokenFault] = {"error": "error", "timeout": "timeout"}
        grants.set_token_outage(faults.get(fault))
        return Response(status_code=204)

    @router.post("/_admin/revoke-all")
    async def revoke_all(siren: Annotated[str, Query()]) -> Response:
        """The bank revokes, on its side, every grant of a company (as a PSU can at its bank)."""
        grants.revoke_siren(siren)
        return Response(status_code=204)

    return router
