"""Console sessions: an API key exchanged once for a random session id kept server-side.

The browser holds only the session id (an HttpOnly, SameSite=Strict cookie, Secure for
live keys); the cache maps its SHA-256 to the principal and the session's CSRF token, and
forgets it when the session expires. The API key itself is never stored nor sent back.
Every request re-reads the key's row, so a revoked or expired key ends its sessions at
once, in every process, with or without a shared cache.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.cache import Cache
from b2bscore.tenants.keys import KeyMode
from b2bscore.tenants.repository import ApiKeyRepository
from b2bscore.tenants.service import Principal, authenticate

SESSION_COOKIE: Final = "b2b_console"
# Double-submit token of the sign-in form, before any session exists.
SIGN_IN_CSRF_COOKIE: Final = "b2b_console_csrf"
CSRF_FIELD: Final = "csrf_token"
_CACHE_PREFIX: Final = "console:session:"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console user: who they are, their CSRF token, when the session ends."""

    session_id: str
    principal: Principal
    key_prefix: str
    csrf_token: str
    expires_at: float  # epoch seconds

    @property
    def mode(self) -> KeyMode:
        """test or live, as the key that signed in."""
        return self.principal.mode

    def csrf_matches(self, presented: str | None) -> bool:
        """True when presented is this session's CSRF token (constant-time)."""
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.csrf_token.encode()
        )


def _cache_key(session_id: str) -> str:
    # The id is a bearer secret: only its digest is used as a key, so a cache dump or a
    # key listing gives no usable session.
    return _CACHE_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _encode(session: ConsoleSession) -> bytes:
    p = session.principal
    return orjson.dumps(
        {
            "tenant_id": p.tenant_id,
            "tenant_name": p.tenant_name,
            "key_id": p.key_id,
            "mode": p.mode,
            "scopes": sorted(p.scopes),
            "rate_limit_per_minute": p.rate_limit_per_minute,
            "key_expires_at": p.expires_at.isoformat() if p.expires_at else None,
            "key_prefix": session.key_prefix,
            "csrf_token": session.csrf_token,
            "expires_at": session.expires_at,
        }
    )


def _decode(session_id: str, raw: bytes) -> ConsoleSession | None:
    try:
        data: dict[str, Any] = orjson.loads(raw)
        mode: KeyMode = "live" if data["mode"] == "live" else "test"
        key_expires = data["key_expires_at"]
        principal = Principal(
            tenant_id=str(data["tenant_id"]),
            tenant_name=str(data["tenant_name"]),
            key_id=str(data["key_id"]),
            mode=mode,
            scopes=frozenset(str(s) for s in data["scopes"]),
            rate_limit_per_minute=data["rate_limit_per_minute"],
            expires_at=datetime.fromisoformat(key_expires) if key_expires else None,
        )
        return ConsoleSession(
            session_id=session_id,
            principal=principal,
            key_prefix=str(data["key_prefix"]),
            csrf_token=str(data["csrf_token"]),
            expires_at=float(data["expires_at"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # unreadable: treated as signed out (fail closed)


async def sign_in(
    db: AsyncSession, cache: Cache, presented_key: str, ttl_seconds: int
) -> ConsoleSession | None:
    """A new session for a valid key; None for an unknown, revoked or expired key."""
    principal = await authenticate(db, presented_key.strip())
    if principal is None:
        return None
    ttl = float(ttl_seconds)
    if principal.expires_at is not None:
        # A session never outlives the key that opened it.
        ttl = min(ttl, (principal.expires_at - datetime.now(UTC)).total_seconds())
        if ttl <= 0:
            return None
    api_key = await ApiKeyRepository(db).get(principal.key_id)
    session = ConsoleSession(
        session_id=secrets.token_urlsafe(32),
        principal=principal,
        key_prefix=api_key.prefix if api_key is not None else "",
        csrf_token=secrets.token_urlsafe(32),
        expires_at=time.time() + ttl,
    )
    await cache.set(_cache_key(session.session_id), _encode(session), ttl)
    return session


async def current_session(
    db: AsyncSession, cache: Cache, session_id: str | None
) -> ConsoleSession | None:
    """The live session behind a cookie value, or None (unknown, expired, key revoked)."""
    if not session_id or len(session_id) > 128:
        return None
    raw = await cache.get(_cache_key(session_id))
    if raw is None:
        return None
    session = _decode(session_id, raw)
    if session is None or session.expires_at <= time.time():
        await cache.delete(_cache_key(session_id))
        return None
    principal = session.principal
    api_key = await ApiKeyRepository(db).get(principal.key_id, tenant_id=principal.tenant_id)
    now = datetime.now(UTC)
    if (
        api_key is None
        or api_key.revoked_at is not None
        or (api_key.expires_at is not None and api_key.expires_at <= now)
    ):
        await cache.delete(_cache_key(session_id))
        return None
    return session


async def sign_out(cache: Cache, session_id: str | None) -> None:
    """Forget the session server-side; the cookie alone opens nothing afterwards."""
    if session_id and len(session_id) <= 128:
        await cache.delete(_cache_key(session_id))


def new_sign_in_token() -> str:
    """A random token for the sign-in form's double-submit CSRF check."""
    return secrets.token_urlsafe(32)


def tokens_match(cookie_value: str | None, form_value: str | None) -> bool:
    """True when the sign-in form carries the token of its cookie (constant-time)."""
    if not cookie_value or not form_value:
        return False
    return hmac.compare_digest(cookie_value.encode(), form_value.encode())
