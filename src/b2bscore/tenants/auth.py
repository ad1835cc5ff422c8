"""FastAPI dependencies: the bearer-key principal and scope checks.

Successful authentications are cached in process for `PRINCIPAL_CACHE_TTL_SECONDS`, so
the hot path does not query the database on every request. A cached hit is checked
against the revocation markers of the shared cache (tenants.revocation), so a key revoked
through the service is refused at once by every process sharing Redis. Without a shared
cache, other processes accept a revoked key for at most the TTL. Expiry is enforced by
the cache entry itself (never cached past expires_at). Unknown keys are never cached, so a
new key works at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from b2bscore.kit.cache import Cache
from b2bscore.kit.deps import DbSession
from b2bscore.kit.problems import Problem
from b2bscore.tenants.keys import hash_key
from b2bscore.tenants.revocation import is_marked_revoked
from b2bscore.tenants.service import Principal, Scope, authenticate

__all__ = [
    "PRINCIPAL_CACHE_TTL_SECONDS",
    "Authenticated",
    "Principal",
    "PrincipalCache",
    "get_principal",
    "principal_cache",
    "require_scope",
    "requires",
]

PRINCIPAL_CACHE_TTL_SECONDS: Final = 5.0


class PrincipalCache:
    """Short-lived, bounded, in-process cache of principals by key hash."""

    def __init__(self, ttl_seconds: float = PRINCIPAL_CACHE_TTL_SECONDS, max_entries: int = 10_000):
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def get(self, key_hash: str) -> Principal | None:
        """The cached principal, or None when absent or stale."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        principal, valid_until = entry
        if valid_until <= time.monotonic():
            del self._entries[key_hash]
            return None
        return principal

    def put(self, key_hash: str, principal: Principal) -> None:
        """Remember principal, never past the key's own expiry."""
        ttl = self.ttl_seconds
        if principal.expires_at is not None:
            ttl = min(ttl, (principal.expires_at - datetime.now(UTC)).total_seconds())
        if ttl <= 0:
            return
        self._entries[key_hash] = (principal, time.monotonic() + ttl)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key_hash: str) -> None:
        """Drop one key's cached principal (after revoking it in this process)."""
        self._entries.pop(key_hash, None)

    def clear(self) -> None:
        """Forget everything (after a revocation in this process, and in tests)."""
        self._entries.clear()


principal_cache = PrincipalCache()

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer sk_test_...` or `sk_live_...`",
)


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _shared_cache(request: Request) -> Cache | None:
    # Apps built without the service state (small test apps) have no shared cache.
    state = getattr(request.app.state, "b2b", None)
    cache: Cache | None = getattr(state, "cache", None)
    return cache


async def get_principal(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller behind `Authorization: Bearer <key>`; 401 problem otherwise."""
    if credentials is None or not credentials.credentials:
        raise _unauthorized("Missing bearer API key.")
    presented = credentials.credentials
    key_hash = hash_key(presented)
    principal = principal_cache.get(key_hash)
    if principal is not None:
        cache = _shared_cache(request)
        if cache is None or not await is_marked_revoked(cache, key_hash):
            return principal
        principal_cache.forget(key_hash)
    principal = await authenticate(session, presented)
    if principal is None:
        # One message for unknown, revoked, expired and malformed keys: no oracle.
        raise _unauthorized("Invalid, revoked or expired API key.")
    principal_cache.put(key_hash, principal)
    return principal


Authenticated = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency returning the principal when it carries scope; 403 problem otherwise."""

    async def check_scope(principal: Authenticated) -> Principal:
        if not principal.has_scope(scope):
            raise Problem(
                403,
                "insufficient_scope",
                "Insufficient scope",
                f"This API key lacks the '{scope}' scope.",
            )
        return principal

    return check_scope


def requires(scope: Scope) -> Any:
    """`Depends` marker for `Annotated[Principal, requires("decisions:read")]`."""
    return Depends(require_scope(scope))
