"""Source cache: raw provider records kept for a per-source freshness, sealed at rest.

Key: ``src:{namespace}:{source}:{siren}``. The namespace is the caller's: it must separate
the sandbox world from live data and, in live mode, tenants, because a company's bank and
books consent is given to one lender; sharing them across tenants would show a lender data
it was never granted. The service therefore passes ``f"{mode}:{tenant_id}"``.

Values are a one-line JSON header (``as_of``, ``fetched_at``) and the packed raw record
(kit.packed: canonical JSON, gzip), sealed with AES-256-GCM under a key derived from the
tokenization key and bound to the cache key: raw open banking records hold IBANs, which
must not sit in clear in Redis. The packed record is what the audit row embeds as is.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import RedisError

from b2bscore.kit.cache import Cache
from b2bscore.kit.packed import unpack_json
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import SourceName

log = logging.getLogger(__name__)

# Registry data moves on legal events, books once a year, bank balances all day long.
DEFAULT_FRESHNESS_SECONDS: Mapping[SourceName, float] = {
    SourceName.REGISTRY: 6 * 3600,
    SourceName.ACCOUNTING: 24 * 3600,
    SourceName.OPEN_BANKING: 5 * 60,
}
# "Nothing here" (no bank consent, no books, unknown company) is kept 10 minutes at most
# (bank consent: the bank data's own 5): a company that grants consent or connects its
# books mid-application is seen again soon, while a burst of re-scores costs no call.
ABSENT_FRESHNESS_SECONDS = 600.0
_NONCE_BYTES = 12
# Version 1 held the raw record as plain JSON; such values now read as misses.
_VERSION = b"\x02"


@dataclass(slots=True)
class CachedRecord:
    """A raw record read back from the cache, with its parsed form once parsed."""

    packed_raw: bytes
    as_of: date
    fetched_at: datetime
    # Filled by the first reader in this process, so that a warm hit costs no re-parse.
    parsed: Any = None
    detail: str | None = None
    # Set when the provider said it has nothing for this company (no consent, no books):
    # the reason, remembered for a shorter while than data.
    absent: str | None = None

    def raw(self) -> dict[str, Any]:
        """The raw record, unpacked (only needed to parse it)."""
        raw: dict[str, Any] = unpack_json(self.packed_raw)
        return raw


# Records this process already holds, by cache key, with the nonce of the sealed value
# they came from (unique per write) and when this process last saw that value in the
# shared cache. For LOCAL_TRUST_SECONDS after that, a record still within its freshness
# is served without asking the shared cache (a repeat customer's decision then costs no
# round trip); after it, the shared cache is asked again, so a purge or a newer write
# there reaches every process within that delay, and the same write (same nonce) is
# reused without decryption, JSON or parsing.
# The parsed form (numpy columns) dominates the size, about 7-8x the packed raw bytes:
# the cache is bounded by that estimate, not by a count, since a busy account's record
# is a hundred times a small one. An LRU smaller than the set of companies seen in turn
# misses on every access, so the budget is sized for thousands of active companies.
LOCAL_TRUST_SECONDS = 30.0
_BUDGET_BYTES = 256 * 1024 * 1024


def _estimated_bytes(record: CachedRecord) -> int:
    return 8 * len(record.packed_raw) + 1024


class _Held:
    """LRU of (nonce, seen_at, record) by cache key, bounded by estimated bytes."""

    def __init__(self, budget_bytes: int) -> None:
        self._items: OrderedDict[str, tuple[bytes, float, CachedRecord]] = OrderedDict()
        self._bytes = 0
        self._budget = budget_bytes

    def get(self, key: str) -> tuple[bytes, float, CachedRecord] | None:
        """The held entry of key (and mark it recently used), or None."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def drop(self, key: str) -> None:
        """Forget key."""
        previous = self._items.pop(key, None)
        if previous is not None:
            self._bytes -= _estimated_bytes(previous[2])

    def put(self, key: str, nonce: bytes, record: CachedRecord) -> None:
        """Hold record as the value seen under key just now."""
        previous = self._items.pop(key, None)
        if previous is not None:
            self._bytes -= _estimated_bytes(previous[2])
        self._items[key] = (nonce, time.monotonic(), record)
        self._bytes += _estimated_bytes(record)
        while self._bytes > self._budget and len(self._items) > 1:
            _, (_, _, evicted) = self._items.popitem(last=False)
            self._bytes -= _estimated_bytes(evicted)


_held = _Held(_BUDGET_BYTES)


def cache_key(namespace: str, source: SourceName, siren: str) -> str:
    """The cache key of one source of one company."""
    return f"src:{namespace}:{source.value}:{siren}"


def forget(namespace: str, source: SourceName, siren: str) -> None:
    """Drop this process's held copy of one record (after its data changed at the origin)."""
    _held.drop(cache_key(namespace, source, siren))


class SourceCache:
    """Per-source freshness over a kit Cache; every failure reads as a miss."""

    def __init__(
        self,
        cache: Cache,
        tokenizer: Tokenizer,
        freshness_seconds: Mapping[SourceName, float] | None = None,
    ) -> None:
        self._cache = cache
        self._aead = AESGCM(tokenizer.derive_key("source-cache-v1"))
        self.freshness_seconds = {**DEFAULT_FRESHNESS_SECONDS, **(freshness_seconds or {})}

    async def get(self, namespace: str, source: SourceName, siren: str) -> CachedRecord | None:
        """The fresh cached raw record, or None (miss, unreadable or cache down)."""
        key = cache_key(namespace, source, siren)
        held = _held.get(key)
        if (
            held is not None
            and time.monotonic() - held[1] < LOCAL_TRUST_SECONDS
            and self._fresh(source, held[2])
        ):
            return held[2]
        try:
            sealed = await self._cache.get(key)
            if sealed is None:
                return None
            nonce = sealed[: 1 + _NONCE_BYTES]
            if held is not None and held[0] == nonce:
                _held.put(key, nonce, held[2])  # seen again in the shared cache just now
                return held[2]
            header, _, packed_raw = self._open(key, sealed).partition(b"\n")
            body = orjson.loads(header)
            record = CachedRecord(
                packed_raw=packed_raw,
                as_of=date.fromisoformat(body["as_of"]),
                fetched_at=datetime.fromisoformat(body["fetched_at"]),
                absent=body.get("absent"),
            )
            _held.put(key, nonce, record)
            return record
        except (RedisError, OSError, InvalidTag, ValueError, KeyError, TypeError) as error:
            # A cache must never cost a decision: fall back to the provider.
            log.warning("source cache read failed for %s: %s", key, type(error).__name__)
            return None

    async def put(
        self,
        namespace: str,
        source: SourceName,
        siren: str,
        packed_raw: bytes,
        as_of: date,
        parsed: Any = None,
        detail: str | None = None,
    ) -> None:
        """Store a successful packed raw record for its source's freshness; failures logged."""
        ttl = self.freshness_seconds[source]
        if ttl <= 0:
            return
        key = cache_key(namespace, source, siren)
        fetched_at = datetime.now(UTC)
        header = orjson.dumps({"as_of": as_of.isoformat(), "fetched_at": fetched_at.isoformat()})
        sealed = self._seal(key, header + b"\n" + packed_raw)
        try:
            await self._cache.set(key, sealed, ttl)
        except (RedisError, OSError) as error:
            log.warning("source cache write failed for %s: %s", key, type(error).__name__)
            return
        _held.put(
            key,
            sealed[: 1 + _NONCE_BYTES],
            CachedRecord(packed_raw, as_of, fetched_at, parsed, detail),
        )

    async def put_absent(self, namespace: str, source: SourceName, siren: str, reason: str) -> None:
        """Remember that the provider has nothing for siren (reason without personal data)."""
        ttl = min(self.freshness_seconds[source], ABSENT_FRESHNESS_SECONDS)
        if ttl <= 0:
            return
        key = cache_key(namespace, source, siren)
        fetched_at = datetime.now(UTC)
        header = orjson.dumps(
            {
                "as_of": fetched_at.date().isoformat(),
                "fetched_at": fetched_at.isoformat(),
                "absent": reason,
            }
        )
        sealed = self._seal(key, header + b"\n")
        try:
            await self._cache.set(key, sealed, ttl)
        except (RedisError, OSError) as error:
            log.warning("source cache write failed for %s: %s", key, type(error).__name__)
            return
        record = CachedRecord(b"", fetched_at.date(), fetched_at, absent=reason)
        _held.put(key, sealed[: 1 + _NONCE_BYTES], record)

    def _fresh(self, source: SourceName, record: CachedRecord) -> bool:
        """True while the record is within its freshness (as the shared cache's TTL)."""
        ttl = self.freshness_seconds[source]
        if record.absent is not None:
            ttl = min(ttl, ABSENT_FRESHNESS_SECONDS)
        return (datetime.now(UTC) - record.fetched_at).total_seconds() < ttl

    def _seal(self, key: str, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, body, key.encode())

    def _open(self, key: str, sealed: bytes) -> bytes:
        if sealed[:1] != _VERSION:
            raise ValueError("unknown cache value version")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], key.encode())
