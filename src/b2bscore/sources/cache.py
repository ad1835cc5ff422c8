"""Source cache: raw provider records kept for a per-source freshness, sealed at rest.

Key: ``src:{namespace}:{source}:{siren}``. The namespace is the caller's: it must separate
the sandbox world from live data and, in live mode, tenants, because a company's bank and
books consent is given to one lender; sharing them across tenants would show a lender data
it was never granted. The service therefore passes ``f"{mode}:{tenant_id}"``.

Values are the raw record (plus ``as_of`` and ``fetched_at``) as orjson, sealed with
AES-256-GCM under a key derived from the tokenization key and bound to the cache key:
raw open banking records hold IBANs, which must not sit in clear in Redis.
"""

from __future__ import annotations

import logging
import os
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
from b2bscore.sources.tokens import Tokenizer
from b2bscore.sources.types import SourceName

log = logging.getLogger(__name__)

# Registry data moves on legal events, books once a year, bank balances all day long.
DEFAULT_FRESHNESS_SECONDS: Mapping[SourceName, float] = {
    SourceName.REGISTRY: 6 * 3600,
    SourceName.ACCOUNTING: 24 * 3600,
    SourceName.OPEN_BANKING: 5 * 60,
}
_NONCE_BYTES = 12
_VERSION = b"\x01"


@dataclass(slots=True)
class CachedRecord:
    """A raw record read back from the cache, with its parsed form once parsed."""

    raw: dict[str, Any]
    as_of: date
    fetched_at: datetime
    # Filled by the first reader in this process, so that a warm hit costs no re-parse.
    parsed: Any = None


# Records already opened in this process, by cache key and the nonce of the sealed value
# (unique per write): a hit on the same write skips decryption, JSON and parsing, while a
# newer write (new nonce) or an expiry in the shared cache is still seen at once.
_OPENED_MAX = 1024  # a bank record is ~100-250 kB parsed: bounded to ~100-250 MB
_opened: OrderedDict[tuple[str, bytes], CachedRecord] = OrderedDict()


def _remember(version: tuple[str, bytes], record: CachedRecord) -> None:
    _opened[version] = record
    while len(_opened) > _OPENED_MAX:
        _opened.popitem(last=False)


def cache_key(namespace: str, source: SourceName, siren: str) -> str:
    """The cache key of one source of one company."""
    return f"src:{namespace}:{source.value}:{siren}"


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
        try:
            sealed = await self._cache.get(key)
            if sealed is None:
                return None
            version = (key, sealed[: 1 + _NONCE_BYTES])
            opened = _opened.get(version)
            if opened is not None:
                _opened.move_to_end(version)
                return opened
            body = orjson.loads(self._open(key, sealed))
            record = CachedRecord(
                raw=body["raw"],
                as_of=date.fromisoformat(body["as_of"]),
                fetched_at=datetime.fromisoformat(body["fetched_at"]),
            )
            _remember(version, record)
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
        raw: dict[str, Any],
        as_of: date,
        parsed: Any = None,
    ) -> None:
        """Store a successful raw record for its source's freshness; failures are logged."""
        ttl = self.freshness_seconds[source]
        if ttl <= 0:
            return
        key = cache_key(namespace, source, siren)
        fetched_at = datetime.now(UTC)
        body = orjson.dumps(
            {"raw": raw, "as_of": as_of.isoformat(), "fetched_at": fetched_at.isoformat()}
        )
        sealed = self._seal(key, body)
        try:
            await self._cache.set(key, sealed, ttl)
        except (RedisError, OSError) as error:
            log.warning("source cache write failed for %s: %s", key, type(error).__name__)
            return
        _remember((key, sealed[: 1 + _NONCE_BYTES]), CachedRecord(raw, as_of, fetched_at, parsed))

    def _seal(self, key: str, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, body, key.encode())

    def _open(self, key: str, sealed: bytes) -> bytes:
        if sealed[:1] != _VERSION:
            raise ValueError("unknown cache value version")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], key.encode())
