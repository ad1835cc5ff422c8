"""Keyed tokens for bank identifiers, so IBANs and account ids never travel in clear."""

from __future__ import annotations

import hashlib
import hmac

from b2bscore.kit.settings import Settings

TOKEN_PREFIX = "tok_"  # noqa: S105 - a prefix, not a secret
TOKEN_HEX_CHARS = 24
# Only for development and tests: a production deployment must set its own key, or tokens
# would be reversible by anyone holding the (public) source code and a list of IBANs.
_DEVELOPMENT_KEY = b"b2bscore-development-tokenization-key"


class Tokenizer:
    """HMAC-SHA256 tokens: stable for one key, meaningless without it."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("tokenization key must hold at least 16 bytes")
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokenizer:
        """The tokenizer of B2BSCORE_TOKENIZATION_KEY (or _FILE); a fixed key outside production."""
        if settings.tokenization_key is not None:
            return cls(settings.tokenization_key.get_secret_value().encode())
        if settings.tokenization_key_file is not None:
            try:
                key = settings.tokenization_key_file.read_text().strip()
            except OSError as error:
                raise ValueError(
                    f"cannot read B2BSCORE_TOKENIZATION_KEY_FILE "
                    f"{settings.tokenization_key_file}: {error.strerror}"
                ) from error
            return cls(key.encode())
        if settings.is_production:
            raise ValueError(
                "production mode needs its tokenization key: set B2BSCORE_TOKENIZATION_KEY or "
                "B2BSCORE_TOKENIZATION_KEY_FILE (create it with `b2bscore audit generate-keys`)"
            )
        return cls(_DEVELOPMENT_KEY)

    def token(self, value: str) -> str:
        """The token of value, e.g. ``tok_0123456789abcdef01234567``."""
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return TOKEN_PREFIX + digest[:TOKEN_HEX_CHARS]

    def iban_token(self, iban: str) -> str:
        """The token of an IBAN, insensitive to spacing and case as printed on statements."""
        return self.token("iban:" + "".join(iban.split()).upper())

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for another use (e.g. cache encryption), independent of tokens."""
        return hmac.new(self._key, b"derive:" + purpose.encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Tokenizer(<key>)"
