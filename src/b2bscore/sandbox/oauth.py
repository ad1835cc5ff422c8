"""The sandbox banks' authorization servers: consent page, token endpoint, revocation.

Each sandbox bank of the directory (``/oauth/{bank}/...``) plays the PSD2 redirect flow as
an ASPSP does: OAuth2 authorization code with PKCE (S256 only), a real HTML consent page
where the company's user ticks the accounts and data categories it shares (micro-consent:
less than was asked may be granted) and accepts or refuses, refresh tokens, and RFC 7009
revocation. Access tokens it issues are accepted by its STET API for the granted accounts
and categories only (see ``Grants.restrict``). The PSU is named by ``login_hint`` (the
SIREN): the sandbox has no bank login.

State lives in this process (the sandbox is one process): grants vanish on restart, as a
bank's would after it revoked them all.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from b2bscore.sources.banks import SANDBOX_BANKS
from b2bscore.training.world import Company

SCOPES = ("balances", "transactions")
ACCESS_TOKEN_SECONDS = 3600
CODE_SECONDS = 120
PAGE_SECONDS = 600
# PSD2's 180 days, but the STET 1.6 sandbox bank grants 90: the service must take the less.
CONSENT_DAYS = {"sandbox-stet14": 180, "sandbox-stet16": 90}
CSRF_COOKIE = "bank_csrf"
TokenFault = Literal["error", "timeout"] | None


@dataclass(slots=True)
class Grant:
    """What a company's user agreed to share with one client, at one bank."""

    bank: str
    siren: str
    client_id: str
    accounts: frozenset[str]
    scopes: frozenset[str]
    consent_expires_at: float
    refresh_token: str
    revoked: bool = False


@dataclass(slots=True)
class _Pending:
    bank: str
    siren: str
    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scopes: frozenset[str]
    csrf: str
    expires_at: float


@dataclass(slots=True)
class _Code:
    grant: Grant
    redirect_uri: str
    code_challenge: str
    expires_at: float
    used: bool = False


@dataclass(slots=True)
class Grants:
    """Every pending page, code, access and refresh token of the sandbox banks."""

    pending: dict[str, _Pending] = field(default_factory=dict)
    codes: dict[str, _Code] = field(default_factory=dict)
    access: dict[str, tuple[Grant, float]] = field(default_factory=dict)
    refresh: dict[str, Grant] = field(default_factory=dict)
    token_outage: TokenFault = None
    access_token_seconds: int = ACCESS_TOKEN_SECONDS

    def grant_of(self, token: str) -> Grant | None:
        """The live grant behind an access token (None: unknown, expired or revoked)."""
        found = self.access.get(token)
        if found is None:
            return None
        grant, expires_at = found
        if grant.revoked or expires_at < time.time() or grant.consent_expires_at < time.time():
            return None
        return grant

    def issue(self, grant: Grant) -> dict[str, Any]:
        """A token response for grant (a new access token; the refresh token stays)."""
        access = "at-" + secrets.token_urlsafe(24)
        self.access[access] = (grant, time.time() + self.access_token_seconds)
        self.refresh[grant.refresh_token] = grant
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_token_seconds,
            "refresh_token": grant.refresh_token,
            "scope": " ".join(sorted(grant.scopes)),
            # Not OAuth2: what the bank says of the consent's own validity (PSD2).
            "consent_expires_in": max(0, int(grant.consent_expires_at - time.time())),
        }


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a code verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _page(bank: str, pending_id: str, pending: _Pending, company: Company) -> str:
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
        pending_id = secrets.token_urlsafe(16)
        pending = _Pending(
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
        grants.pending[pending_id] = pending
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
        pending = grants.pending.get(request_id)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if (
            pending is None
            or pending.bank != bank
            or pending.expires_at < time.time()
            or not hmac.compare_digest(csrf_token, pending.csrf)
            or not hmac.compare_digest(cookie, pending.csrf)
        ):
            return HTMLResponse("<p>This consent request is invalid or expired.</p>", 400)
        del grants.pending[request_id]  # one answer per page
        owned = {a.resource_id for a in company_of(pending.siren).accounts}
        chosen_accounts = frozenset(accounts or ()) & owned
        chosen_scopes = frozenset(scopes or ()) & pending.scopes
        if action != "accept" or not chosen_accounts or not chosen_scopes:
            return _redirect(
                pending.redirect_uri, {"error": "access_denied", "state": pending.state}
            )
        grant = Grant(
            bank=bank,
            siren=pending.siren,
            client_id=pending.client_id,
            accounts=chosen_accounts,
            scopes=chosen_scopes,
            consent_expires_at=time.time() + CONSENT_DAYS[bank] * 86_400,
            refresh_token="rt-" + secrets.token_urlsafe(24),
        )
        code = secrets.token_urlsafe(24)
        grants.codes[code] = _Code(
            grant, pending.redirect_uri, pending.code_challenge, time.time() + CODE_SECONDS
        )
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
            issued = grants.codes.get(code)
            if issued is None or issued.grant.bank != bank:
                return _oauth_error(400, "invalid_grant", "unknown code")
            if issued.used:
                # RFC 6749 4.1.2: a code used twice revokes what it gave.
                issued.grant.revoked = True
                return _oauth_error(400, "invalid_grant", "code already used")
            issued.used = True
            if (
                issued.expires_at < time.time()
                or issued.redirect_uri != redirect_uri
                or issued.grant.client_id != client_id
                or not hmac.compare_digest(s256(code_verifier), issued.code_challenge)
            ):
                return _oauth_error(400, "invalid_grant", "code, client, redirect or verifier")
            return JSONResponse(grants.issue(issued.grant))
        if grant_type == "refresh_token":
            grant = grants.refresh.get(refresh_token)
            if grant is None or grant.revoked or grant.bank != bank:
                return _oauth_error(400, "invalid_grant", "unknown or revoked refresh token")
            if grant.consent_expires_at < time.time():
                return _oauth_error(400, "invalid_grant", "consent expired")
            return JSONResponse(grants.issue(grant))
        return _oauth_error(400, "unsupported_grant_type", grant_type)

    @router.post("/{bank}/revoke")
    async def revoke(bank: str, token: Annotated[str, Form()]) -> Response:
        """RFC 7009: revoke the grant behind an access or refresh token (200 either way)."""
        grant = grants.refresh.get(token) or (grants.access.get(token) or (None, 0.0))[0]
        if grant is not None and grant.bank == bank:
            grant.revoked = True
        return Response(status_code=200)

    @router.put("/_admin/token-fault")
    async def token_fault(fault: Annotated[str, Query()] = "") -> Response:
        """Make every token endpoint fail ("error"), hang ("timeout") or work ("")."""
        grants.token_outage = fault if fault in ("error", "timeout") else None  # type: ignore[assignment]
        return Response(status_code=204)

    @router.post("/_admin/revoke-all")
    async def revoke_all(siren: Annotated[str, Query()]) -> Response:
        """The bank revokes, on its side, every grant of a company (as a PSU can at its bank)."""
        for grant in grants.refresh.values():
            if grant.siren == siren:
                grant.revoked = True
        return Response(status_code=204)

    return router
