"""HMAC-SHA256 keys of the audit chain: a link the database alone cannot recompute.

Kept apart from the rows (B2BSCORE_AUDIT_KEYS, or a 0600 key file under var_dir on the
embedded default): whoever can write the table but does not hold the key cannot forge a
row nor re-link the rows after one they changed. Each row names the id of the key that
linked it, so keys rotate like the data keys: the last one links, every one verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from b2bscore.decisions.crypto import _KEY_ID, KEY_BYTES, KeyringError, _format, _parse
from b2bscore.kit.files import create_private, make_private
from b2bscore.kit.settings import Settings

CHAIN_KEY_FILE_NAME: Final = "audit_keys"


class ChainKeyring:
    """Chain keys by id; the newest (last) links new rows, every one verifies old ones."""

    def __init__(self, keys: Mapping[str, bytes], *, path: Path | None = None) -> None:
        if not keys:
            raise KeyringError("the audit chain needs at least one key")
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id) or len(key) != KEY_BYTES:
                raise KeyringError(f"invalid audit key {key_id!r}")
        self._keys = dict(keys)
        # HMAC's key schedule (two padded blocks hashed) done once per key, not per row.
        self._macs = {
            key_id: hmac.new(key, digestmod=hashlib.sha256) for key_id, key in keys.items()
        }
        self._path = path

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainKeyring:
        """Keys from B2BSCORE_AUDIT_KEYS, else the key file under var_dir (created once)."""
        if settings.audit_keys is not None:
            return cls(_parse(settings.audit_keys.get_secret_value(), "audit"))
        if settings.is_production:
            # Fail closed: a key made up beside the rows it links would protect nothing.
            raise KeyringError(
                "production mode needs its audit chain keys: set B2BSCORE_AUDIT_KEYS "
                "(create them with `b2bscore audit generate-keys`)"
            )
        return cls.from_file(settings.var_dir / CHAIN_KEY_FILE_NAME)

    @classmethod
    def existing(cls, settings: Settings) -> ChainKeyring | None:
        """The configured keys, or None where there are none (never creates a key file)."""
        if settings.audit_keys is None and not (settings.var_dir / CHAIN_KEY_FILE_NAME).exists():
            return None
        return cls.from_settings(settings)

    @classmethod
    def from_file(cls, path: Path) -> ChainKeyring:
        """Keys from a 'key_id:base64' per line file, created 0600 with key c1 if absent."""
        create_private(path, (_format("c1", secrets.token_bytes(KEY_BYTES)) + "\n").encode())
        make_private(path)
        return cls(_parse(path.read_text(), "audit"), path=path)

    @property
    def current_key_id(self) -> str:
        """Id of the key that links new rows."""
        return next(reversed(self._keys))

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, oldest first."""
        return tuple(self._keys)

    @property
    def file_backed(self) -> bool:
        """True when the keys live in a key file (add_key persists), not in settings."""
        return self._path is not None

    def add_key(self) -> str:
        """Add a fresh key that links from now on (appended to the key file if any)."""
        number = len(self._keys) + 1
        while f"c{number}" in self._keys:
            number += 1
        key_id, key = f"c{number}", secrets.token_bytes(KEY_BYTES)
        if self._path is not None:
            with self._path.open("a") as handle:
                handle.write(_format(key_id, key) + "\n")
        self._keys[key_id] = key
        self._macs[key_id] = hmac.new(key, digestmod=hashlib.sha256)
        return key_id

    def key_spec(self, key_id: str) -> str:
        """'key_id:base64key' of one key, to append to B2BSCORE_AUDIT_KEYS after a rotation."""
        return _format(key_id, self._keys[key_id])

    def mac(self, key_id: str, data: bytes) -> str:
        """HMAC-SHA256 of data under key_id, as hex; KeyringError for an unknown id."""
        base = self._macs.get(key_id)
        if base is None:
            raise KeyringError(f"unknown audit key id {key_id!r}")
        mac = base.copy()
        mac.update(data)
        return mac.hexdigest()
