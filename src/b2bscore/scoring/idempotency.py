"""Idempotency-Key handling: a 24 h claim in the shared cache over the audit store's rule.

The audit store's unique (tenant, mode, idempotency_key) constraint is what guarantees
one decision per key; test and live never share a key, in the store as in the cache.
The cache in front of it lets a retry that arrives while the first request is still in
flight wait for that request's decision instead of calling the providers a second time.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from b2bscore.kit.cache import Cache
from b2bscore.kit.problems import Problem

IDEMPOTENCY_TTL_SECONDS = 86_400
_PENDING = b"pending"
_POLL_SECONDS = 0.01


def _key(tenant_id: str, mode: str, idempotency_key: str) -> str:
    return f"idem:{tenant_id}:{mode}:{idempotency_key}"


async def claim(
    cache: Cache,
    tenant_id: str,
    mode: str,
    idempotency_key: str,
    fingerprint: str,
    deadline: float,
) -> str | None:
    """Claim the key for this request; or the decision id an earlier request got for it.

    Returns None when this request owns the key and must decide. Waits, until the
    deadline, for a concurrent request holding the key; past it, raises InFlight.
    """
    key = _key(tenant_id, mode, idempotency_key)
    pending = orjson.dumps({"state": "pending", "fingerprint": fingerprint})
    while True:
        if await cache.set_if_absent(key, pending, IDEMPOTENCY_TTL_SECONDS):
            return None
        stored = await cache.get(key)
        if stored is None:
            continue  # released between the two calls: try to claim again
        entry = orjson.loads(stored)
        if entry.get("fingerprint") != fingerprint:
            raise Problem(
                409,
                "idempotency_key_reused",
                "Idempotency key reused with a different request",
                "This Idempotency-Key was used for another request body; use a new key.",
            )
        if entry.get("state") == "done":
            return str(entry["decision_id"])
        if time.monotonic() >= deadline:
            raise InFlight
        await asyncio.sleep(_POLL_SECONDS)


class InFlight(Exception):
    """Another request of this process still holds the key at the deadline."""


def in_flight_problem() -> Problem:
    """409: the key's first request is still running and nothing is recorded yet."""
    return Problem(
        409,
        "idempotency_key_in_flight",
        "A request with this Idempotency-Key is still in progress",
        "Nothing is recorded for this key yet. Retry in a moment to receive its decision.",
        headers={"Retry-After": "1"},
    )


async def complete(
    cache: Cache,
    tenant_id: str,
    mode: str,
    idempotency_key: str,
    fingerprint: str,
    decision_id: str,
) -> None:
    """Record the decision the key produced, for 24 hours."""
    entry = {"state": "done", "fingerprint": fingerprint, "decision_id": decision_id}
    await cache.set(
        _key(tenant_id, mode, idempotency_key), orjson.dumps(entry), IDEMPOTENCY_TTL_SECONDS
    )


async def release(cache: Cache, tenant_id: str, mode: str, idempotency_key: str) -> None:
    """Give the key up after a failure, so that a retry can decide (or find a late row)."""
    await cache.delete(_key(tenant_id, mode, idempotency_key))
