"""AES-256-GCM encryption of the raw provider payloads, with key ids for rotation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from b2bscore.kit.settings import Settings

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
KEY_FILE_NAME: Final = "data_keys"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class KeyringError(Exception):
    """The data keys are missing, malformed or unknown."""


class DecryptionError(Exception):
    """A payload did not authenticate: wrong key, wrong AAD, or tampered bytes."""


class UnknownDataKey(KeyringError):
    """The payload names a key id this keyring does not hold: a missing key, not tampering."""


def new_key_id(number: int, key: bytes) -> str:
    """`k<number>-<fingerprint>`: a new key never takes the id of another key.

    A key file lost and created again used to start over at `k1` with another key, and
    every older payload then failed to authenticate, as if tampered with. With the key's
    fingerprint in its id, those payloads name a key id the keyring does not know.
    """
    fingerprint = hashlib.sha256(b"b2bscore.data-key-id|" + key).hexdigest()[:8]
    return f"k{number}-{fingerprint}"


def new_key_spec() -> str:
    """A fresh 'key_id:base64key' line for B2BSCORE_DATA_KEYS or a data keys file."""
    key = secrets.token_bytes(KEY_BYTES)
    return _format(new_key_id(1, key), key)


def payload_aad(tenant_id: str, decision_id: str) -> bytes:
    """Associated data binding a ciphertext to its decision and tenant."""
    return f"b2bscore.decision.v1|{tenant_id}|{decision_id}".encode()


def _parse(spec: str, label: str = "data") -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for item in re.split(r"[,\n]", spec):
        item = item.strip()
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise KeyringError(f"{label} keys must read 'key_id:base64key,...'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyringError(f"{label} key {key_id!r} is not valid base64") from exc
        if len(key) != KEY_BYTES:
            raise KeyringError(f"{label} key {key_id!r} must be {KEY_BYTES} bytes")
        if key_id in keys:
            raise KeyringError(f"{label} key id {key_id!r} appears twice")
        keys[key_id] = key
    return keys


def _format(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.b64encode(key).decode()}"


class DataKeyring:
    """Data keys by id; the newest (last) encrypts, every one can decrypt."""

    def __init__(self, keys: Mapping[str, bytes], *, path: Path | None = None) -> None:
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id) or len(key) != KEY_BYTES:
                raise KeyringError(f"invalid data key {key_id!r}")
        self._keys = dict(keys)
        self._path = path

    @classmethod
    def from_settings(cls, settings: Settings) -> DataKeyring:
        """Keys from B2BSCORE_DATA_KEYS or B2BSCORE_DATA_KEYS_FILE; else, outside production,
        the key file under var_dir (created once). Production without keys: KeyringError.
        """
        if settings.data_keys is not None:
            return cls(_parse(settings.data_keys.get_secret_value()))
        if settings.data_keys_file is not None:
            # A mounted secret (Docker, Kubernetes): read, never created nor appended to.
            try:
                spec = settings.data_keys_file.read_text()
            except OSError as error:
                raise KeyringError(
                    f"cannot read B2BSCORE_DATA_KEYS_FILE {settings.data_keys_file}: "
                    f"{error.strerror}"
                ) from error
            return cls(_parse(spec))
        if settings.is_production:
            # Fail closed: a key made up here would sit beside the data it protects, and
            # the next start elsewhere would make another.
            raise KeyringError(
                "production mode needs its data-encryption keys: set B2BSCORE_DATA_KEYS or "
                "B2BSCORE_DATA_KEYS_FILE (create them with `b2bscore audit generate-keys`)"
            )
        return cls.from_file(settings.var_dir / KEY_FILE_NAME)

    @classmethod
    def from_file(cls, path: Path) -> DataKeyring:
        """Keys from a 'key_id:base64' per line file, created 0600 with key k1 if absent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting together must not each write their own k1.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                key = secrets.token_bytes(KEY_BYTES)
                handle.write(_format(new_key_id(1, key), key) + "\n")
        return cls(_parse(path.read_text()), path=path)

    @property
    def current_key_id(self) -> str:
        """Id of the key that encrypts new payloads."""
        return next(reversed(self._keys))

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, oldest first."""
        return tuple(self._keys)

    def add_key(self) -> str:
        """Add a fresh key that encrypts from now on (appended to the key file if any)."""
        number = len(self._keys) + 1
        while any(k == f"k{number}" or k.startswith(f"k{number}-") for k in self._keys):
            number += 1
        key = secrets.token_bytes(KEY_BYTES)
        key_id = new_key_id(number, key)
        if self._path is not None:
            with self._path.open("a") as handle:
                handle.write(_format(key_id, key) + "\n")
        self._keys[key_id] = key
        return key_id

    @property
    def file_backed(self) -> bool:
        """True when the keys live in a key file (add_key persists), not in settings."""
        return self._path is not None

    def key_spec(self, key_id: str) -> str:
        """'key_id:base64key' of one key, to append to B2BSCORE_DATA_KEYS after a rotation."""
        return _format(key_id, self._keys[key_id])

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        """(key_id, nonce, ciphertext) under the newest key."""
        key_id = self.current_key_id
        # Random 96-bit nonces: safe far beyond any realistic count of rows per key.
        nonce = secrets.token_bytes(NONCE_BYTES)
        return key_id, nonce, AESGCM(self._keys[key_id]).encrypt(nonce, plaintext, aad)

    def decrypt(self, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext; DecryptionError if anything does not authenticate."""
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownDataKey(
                f"unknown key: the payload was encrypted with data key {key_id!r}, which this "
                f"service does not hold (it holds {', '.join(self._keys)}); the payload is "
                "not known to be tampered with"
            )
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag as exc:
            raise DecryptionError("payload does not authenticate") from exc
