"""Key format and hashing."""

from __future__ import annotations

import hashlib
import re

import pytest

from b2bscore.tenants.keys import MAX_KEY_LENGTH, display_prefix, generate_key, hash_key, mode_of


@pytest.mark.parametrize("mode", ["test", "live"])
def test_generated_keys_carry_their_mode_and_256_random_bits(mode: str) -> None:
    key = generate_key(mode)  # type: ignore[arg-type]
    assert re.fullmatch(rf"sk_{mode}_[A-Za-z0-9_-]{{43}}", key)
    assert generate_key(mode) != key  # type: ignore[arg-type]
    assert mode_of(key) == mode


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        generate_key("prod")  # type: ignore[arg-type]


def test_hash_is_sha256_hex_of_the_whole_key() -> None:
    key = generate_key("test")
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(hash_key(key)) == 64
    assert display_prefix(key) == key[:12]
    assert display_prefix(key).startswith("sk_test_")


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "pk_test_" + "a" * 43,
        "sk_prod_" + "a" * 43,
        "sk_test_short",
        "sk_test_" + "a" * 42 + "!",
        "sk_test_" + "a" * (MAX_KEY_LENGTH - 7),
        "Bearer sk_test_" + "a" * 43,
    ],
)
def test_malformed_keys_have_no_mode(presented: str) -> None:
    assert mode_of(presented) is None
