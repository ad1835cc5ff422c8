"""FastAPI dependencies: the bearer-key principal and scope checks.

Successful authentications are cached in process for `PRINCIPAL_CACHE_TTL_SECONDS`, so
the hot path does not query the database on every request. The price is a revocation
delay: a revoked (or just expired) key keeps working for at most that long in each
process that authenticated it recently. Unknown keys are never cached, so a new key
works at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from b2bscore.kit.deps import DbSession
from b2bscore.kit.problems import Problem
from b2bscore.tenants.keys import hash_key
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


async def get_principal(
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
        return principal
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
