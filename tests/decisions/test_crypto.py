"""AES-256-GCM payload encryption and the keyring."""

from __future__ import annotations

import base64
import secrets
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from b2bscore.decisions.crypto import (
    DataKeyring,
    DecryptionError,
    KeyringError,
    UnknownDataKey,
    new_key_spec,
    payload_aad,
)
from b2bscore.kit.settings import Settings


def test_round_trip_and_aad_binding(keyring: DataKeyring) -> None:
    aad = payload_aad("tenant-a", "decision-1")
    key_id, nonce, ciphertext = keyring.encrypt(b'{"raw":"payload"}', aad)
    assert key_id == "k1"
    assert len(nonce) == 12
    assert b"payload" not in ciphertext
    assert keyring.decrypt(key_id, nonce, ciphertext, aad) == b'{"raw":"payload"}'
    for wrong in (payload_aad("tenant-b", "decision-1"), payload_aad("tenant-a", "decision-2")):
        with pytest.raises(DecryptionError):
            keyring.decrypt(key_id, nonce, ciphertext, wrong)
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(DecryptionError):
        keyring.decrypt(key_id, nonce, tampered, aad)
    with pytest.raises(UnknownDataKey, match="unknown key"):
        keyring.decrypt("k9", nonce, ciphertext, aad)


def test_nonces_are_never_reused(keyring: DataKeyring) -> None:
    nonces = {keyring.encrypt(b"x", b"aad")[1] for _ in range(1000)}
    assert len(nonces) == 1000


def test_keys_from_settings_newest_encrypts() -> None:
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    spec = f"k1:{base64.b64encode(k1).decode()}, k2:{base64.b64encode(k2).decode()}"
    keyring = DataKeyring.from_settings(Settings(data_keys=SecretStr(spec)))
    assert keyring.key_ids == ("k1", "k2")
    assert keyring.encrypt(b"x", b"")[0] == "k2"
    old = DataKeyring({"k1": k1}).encrypt(b"old", b"aad")
    assert keyring.decrypt(*old, b"aad") == b"old"


@pytest.mark.parametrize(
    "spec",
    [
        "k1",
        "k1:not base64!",
        f"k1:{base64.b64encode(b'short').decode()}",
        f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}",
        "",
    ],
)
def test_malformed_data_keys_are_refused(spec: str) -> None:
    with pytest.raises(KeyringError):
        DataKeyring.from_settings(Settings(data_keys=SecretStr(spec)))


def test_embedded_key_file_is_private_and_rotates(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    keyring = DataKeyring.from_settings(settings)
    path = tmp_path / "var" / "data_keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (first,) = keyring.key_ids
    assert first.startswith("k1-")
    sealed = keyring.encrypt(b"before rotation", b"aad")

    # Reopening reads the same key instead of making a new one.
    assert DataKeyring.from_settings(settings).decrypt(*sealed, b"aad") == b"before rotation"

    second = keyring.add_key()
    assert second.startswith("k2-")
    reopened = DataKeyring.from_settings(settings)
    assert reopened.key_ids == (first, second)
    assert reopened.encrypt(b"after", b"aad")[0] == second
    assert reopened.decrypt(*sealed, b"aad") == b"before rotation"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_lost_key_file_made_again_says_unknown_key_not_tampered(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    sealed = DataKeyring.from_settings(settings).encrypt(b"payload", b"aad")
    (tmp_path / "var" / "data_keys").unlink()
    remade = DataKeyring.from_settings(settings)
    assert remade.key_ids != (sealed[0],)  # a new key never takes an old key's id
    with pytest.raises(UnknownDataKey, match="unknown key"):
        remade.decrypt(*sealed, b"aad")


def test_production_refuses_to_make_up_keys(tmp_path: Path) -> None:
    settings = Settings(env="production", var_dir=tmp_path / "var")
    with pytest.raises(KeyringError, match="B2BSCORE_DATA_KEYS_FILE"):
        DataKeyring.from_settings(settings)
    assert not (tmp_path / "var" / "data_keys").exists()


def test_keys_from_a_secrets_file(tmp_path: Path) -> None:
    secret = tmp_path / "data_keys"
    secret.write_text(new_key_spec() + "\n")
    keyring = DataKeyring.from_settings(Settings(env="production", data_keys_file=secret))
    assert not keyring.file_backed  # a mounted secret is read, never appended to
    assert keyring.decrypt(*keyring.encrypt(b"x", b"aad"), b"aad") == b"x"
    with pytest.raises(KeyringError, match="cannot read"):
        DataKeyring.from_settings(Settings(data_keys_file=tmp_path / "missing"))
