"""Revocation markers in the shared cache, so a revoked key is refused at once everywhere.

Each process caches successful authentications for a few seconds (tenants.auth). A
revocation writes `revoked:<key hash>` to the shared cache (Redis in production) for
longer than that cache lives, and every cached hit checks it: one GET instead of a
database query. Without a shared cache (embedded default, one process) the revoking
process clears its own cache; other processes wait out the cache TTL.
"""

from __future__ import annotations

from typing import Final

from b2bscore.kit.cache import Cache

# Far longer than the principal cache TTL (5 s): once the marker expires no process can
# still hold a principal cached before the revocation, and the database refuses the key.
REVOCATION_MARKER_TTL_SECONDS: Final = 300.0
_PREFIX: Final = "revoked:"


def marker_key(key_hash: str) -> str:
    """Cache key of the revocation marker of a key hash."""
    return _PREFIX + key_hash


async def mark_revoked(cache: Cache, key_hash: str) -> None:
    """Tell every process sharing the cache that this key is revoked."""
    await cache.set(marker_key(key_hash), b"1", REVOCATION_MARKER_TTL_SECONDS)


async def is_marked_revoked(cache: Cache, key_hash: str) -> bool:
    """True when a revocation of this key was announced recently."""
    return await cache.get(marker_key(key_hash)) is not None
