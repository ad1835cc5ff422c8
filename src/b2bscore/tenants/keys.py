"""API key format: `sk_test_` / `sk_live_` + 256 random bits, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final, Literal

KeyMode = Literal["test", "live"]

MODES: Final[tuple[KeyMode, ...]] = ("test", "live")
PREFIXES: Final[dict[KeyMode, str]] = {"test": "sk_test_", "live": "sk_live_"}
DISPLAY_PREFIX_LENGTH: Final = 12
# Far above a real key (51 chars); anything longer is refused before hashing or the DB.
MAX_KEY_LENGTH: Final = 200

_WELL_FORMED = re.compile(r"sk_(test|live)_[A-Za-z0-9_-]{16,192}")


def generate_key(mode: KeyMode) -> str:
    """A new random key for the given mode."""
    if mode not in PREFIXES:
        raise ValueError(f"unknown key mode {mode!r}")
    return PREFIXES[mode] + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex digest of the whole key; the only form ever stored.

    A plain hash suffices (no salt, no KDF): the key carries 256 random bits, so there
    is nothing to brute-force, and a fast hash keeps the lookup on the hot path cheap.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """The first characters of a key, safe to show to identify it (e.g. sk_test_ab12)."""
    return key[:DISPLAY_PREFIX_LENGTH]


def mode_of(key: str) -> KeyMode | None:
    """The mode a well-formed key belongs to, or None when the key is malformed."""
    if len(key) > MAX_KEY_LENGTH:
        return None
    match = _WELL_FORMED.fullmatch(key)
    if match is None:
        return None
    return "test" if match.group(1) == "test" else "live"
