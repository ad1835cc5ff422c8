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

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from b2bscore.kit.cache import Cache, fixed_window
from b2bscore.kit.db import SessionOpener, opened_session
from b2bscore.kit.deadline import request_deadline, within
from b2bscore.kit.deps import Sessions
from b2bscore.kit.problems import Problem
from b2bscore.kit.state import AppState
from b2bscore.tenants.keys import hash_key
from b2bscore.tenants.limits import (
    WINDOW_SECONDS,
    rate_key,
    refuse_past_limit,
    refuse_unauthenticated_past_limit,
    unauthenticated_rate_key,
)
from b2bscore.tenants.revocation import is_marked_revoked, marker_key
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


def _app_state(request: Request) -> AppState | None:
    # Apps built without the service state (small test apps) have no shared cache.
    state: AppState | None = getattr(request.app.state, "b2b", None)
    return state


def _client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def _refuse_if_flooding(request: Request, state: AppState | None) -> None:
    """429 before any database work when this address already spent its allowance."""
    if state is None:
        return
    window_key, seconds_left = fixed_window(
        unauthenticated_rate_key(_client_address(request)), WINDOW_SECONDS
    )
    hits = await state.cache.get(window_key)
    if hits is not None:
        refuse_unauthenticated_past_limit(state.settings, int(hits) + 1, seconds_left)


async def _refused(request: Request, state: AppState | None, detail: str) -> Problem:
    """The 401 of a request without a valid key, or 429 once its address sent too many."""
    if state is not None:
        hits, seconds_left = await state.cache.incr_window(
            unauthenticated_rate_key(_client_address(request)), WINDOW_SECONDS
        )
        refuse_unauthenticated_past_limit(state.settings, hits, seconds_left)
    return _unauthorized(detail)


# Lookups in flight by key hash: when a key's cached principal expires under load, every
# request of that key in flight misses at once; they share one database lookup.
_lookups: dict[str, asyncio.Task[Principal | None]] = {}


async def _from_database(
    request: Request, sessions: SessionOpener, presented: str, key_hash: str
) -> Principal | None:
    async def lookup() -> Principal | None:
        async with opened_session(sessions) as session:
            principal = await authenticate(session, presented)
        if principal is not None:
            principal_cache.put(key_hash, principal)
        return principal

    shared = _lookups.get(key_hash)
    if shared is None or shared.get_loop() is not asyncio.get_running_loop():
        shared = _lookups[key_hash] = asyncio.create_task(lookup())
        shared.add_done_callback(lambda done: _forget_lookup(key_hash, done))
    # A stalled database answers 503 by the request's deadline (kit.deadline); the shared
    # lookup itself is never cancelled by one of its waiters giving up.
    return await within(request_deadline(request), asyncio.shield(shared), store="database")


def _forget_lookup(key_hash: str, done: asyncio.Task[Principal | None]) -> None:
    if _lookups.get(key_hash) is done:
        del _lookups[key_hash]
    if not done.cancelled():
        done.exception()  # read: a failure is the waiters' to report, not the loop's


# Asks the shared cache whether a principal found in this process's cache was revoked
# since; True when it was.
RevocationProbe = Callable[[Cache, str, Principal], Awaitable[bool]]


async def _marked_revoked(cache: Cache, key_hash: str, principal: Principal) -> bool:
    return await is_marked_revoked(cache, key_hash)


async def _resolve(
    request: Request,
    sessions: SessionOpener,
    credentials: HTTPAuthorizationCredentials | None,
    revoked: RevocationProbe = _marked_revoked,
) -> Principal:
    """The principal of the presented key: this process's cache, checked, else the database."""
    state = _app_state(request)
    if credentials is None or not credentials.credentials:
        raise await _refused(request, state, "Missing bearer API key.")
    presented = credentials.credentials
    key_hash = hash_key(presented)
    principal = principal_cache.get(key_hash)
    if principal is not None:
        if state is None or not await revoked(state.cache, key_hash, principal):
            return principal
        principal_cache.forget(key_hash)
    await _refuse_if_flooding(request, state)
    principal = await _from_database(request, sessions, presented, key_hash)
    if principal is None:
        # One message for unknown, revoked, expired and malformed keys: no oracle.
        raise await _refused(request, state, "Invalid, revoked or expired API key.")
    return principal


async def get_principal(
    request: Request,
    sessions: Sessions,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller behind `Authorization: Bearer <key>`; 401 problem otherwise."""
    return await _resolve(request, sessions, credentials)


Authenticated = Annotated[Principal, Depends(get_principal)]


def _check_scope(principal: Principal, scope: Scope) -> None:
    if not principal.has_scope(scope):
        raise Problem(
            403,
            "insufficient_scope",
            "Insufficient scope",
            f"This API key lacks the '{scope}' scope.",
        )


def require_scope(
    scope: Scope, *, rate_limited: bool = False
) -> Callable[..., Awaitable[Principal]]:
    """A dependency returning the principal when it carries scope; 403 problem otherwise.

    With rate_limited, the request also counts against its tenant's per-minute limit in its
    mode (429), before its body is read.
    """

    async def check_scope(principal: Authenticated) -> Principal:
        _check_scope(principal, scope)
        return principal

    async def admit(
        request: Request,
        sessions: Sessions,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        counted: tuple[int, float] | None = None

        async def revoked_or_counted(cache: Cache, key_hash: str, principal: Principal) -> bool:
            nonlocal counted
            if not principal.has_scope(scope):  # refused below (403): not counted
                return await is_marked_revoked(cache, key_hash)
            # The revocation check and the hit count share one round trip: on the hot path
            # this is the request's only trip to the shared cache.
            counted = await cache.incr_window_unless(
                marker_key(key_hash), rate_key(principal), WINDOW_SECONDS
            )
            return counted is None

        principal = await _resolve(request, sessions, credentials, revoked_or_counted)
        _check_scope(principal, scope)
        state = _app_state(request)
        if state is None:  # small apps without the service state have no limits
            return principal
        if counted is None:  # not from this process's cache: counted on its own
            counted = await state.cache.incr_window(rate_key(principal), WINDOW_SECONDS)
        refuse_past_limit(principal, state.settings, *counted)
        return principal

    return admit if rate_limited else check_scope


def requires(scope: Scope, *, rate_limited: bool = False) -> Any:
    """`Depends` marker for `Annotated[Principal, requires("decisions:read")]`."""
    return Depends(require_scope(scope, rate_limited=rate_limited))
