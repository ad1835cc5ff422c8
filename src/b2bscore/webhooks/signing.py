"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.

https://www.standardwebhooks.com: the secret is `whsec_` and base64 of random bytes; the
HMAC key is those bytes. Several signatures go space-separated in one header, which is how
a rotated secret keeps signing beside the new one for its grace period.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the prefix, not a secret
SECRET_BYTES: Final = 32


def new_secret() -> str:
    """A fresh signing secret, `whsec_` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    signing_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` header: one signature per live secret, space-separated."""
    return " ".join(sign(s, message_id, timestamp, body) for s in signing_secrets)
