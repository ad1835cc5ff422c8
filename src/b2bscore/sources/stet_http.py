"""The HTTP side of STET: request ids, http-signature, 429 back-off, hrefs, exact JSON.

Every STET call carries an ``X-Request-ID``; at banks that enforce it, a ``Digest`` of the
body and a ``Signature`` (draft-cavage http-signature, as STET specifies, with the TPP's
QSealC key). These are added by an httpx ``Auth`` so that no call can leave without them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from b2bscore.sources.banks import Bank
from b2bscore.sources.errors import SourceFormatError

# The fan-out's absolute deadline (time.monotonic()) for the fetch running in this task;
# None outside a fan-out. A 429 is waited out only when the retry still fits before it.
DEADLINE: ContextVar[float | None] = ContextVar("stet_deadline", default=None)
# Seconds one STET call may take when no request budget applies (a background sync); None:
# the client's own timeout (the decision budget).
CALL_TIMEOUT: ContextVar[float | None] = ContextVar("stet_call_timeout", default=None)
MAX_RETRIES_429 = 2
# Without a deadline (a CLI or a test), never wait longer than this on one 429.
MAX_WAIT_WITHOUT_DEADLINE_S = 2.0
# Time kept for the retried request itself after the wait.
RETRY_MARGIN_S = 0.05
SIGNED_HEADERS = ("(request-target)", "digest", "x-request-id")
# dateFrom reaches this far back: the features read 91 days, and the history-length
# feature the oldest entry (the world's histories hold at most 120 days).
DEFAULT_HISTORY_DAYS = 400


class RequestSigner:
    """Signs requests with an RSA key (rsa-sha256), as STET banks that check QSealC ask."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: rsa.RSAPrivateKey, key_id: str) -> None:
        if not key_id:
            raise ValueError("a signing key needs its keyId (the QSealC certificate URL)")
        self._key = key
        self.key_id = key_id

    @classmethod
    def from_pem_file(cls, path: Path, key_id: str) -> RequestSigner:
        """The signer of a PEM private key file (unencrypted PKCS#8 or PKCS#1 RSA)."""
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the STET signing key must be an RSA key")
        return cls(key, key_id)

    def sign(self, request: httpx.Request) -> None:
        """Set Digest and Signature on request (X-Request-ID must already be set)."""
        digest = base64.b64encode(hashlib.sha256(request.content).digest()).decode()
        request.headers["Digest"] = f"SHA-256={digest}"
        signature = base64.b64encode(
            self._key.sign(signing_string(request), padding.PKCS1v15(), hashes.SHA256())
        ).decode()
        request.headers["Signature"] = (
            f'keyId="{self.key_id}",algorithm="rsa-sha256",'
            f'headers="{" ".join(SIGNED_HEADERS)}",signature="{signature}"'
        )

    def __repr__(self) -> str:
        return f"RequestSigner(key_id={self.key_id!r})"


def signing_string(request: httpx.Request) -> bytes:
    """The string the Signature covers: (request-target), digest and x-request-id lines."""
    target = f"{request.method.lower()} {request.url.raw_path.decode('ascii')}"
    lines = [
        f"(request-target): {target}",
        f"digest: {request.headers['digest']}",
        f"x-request-id: {request.headers['x-request-id']}",
    ]
    return "\n".join(lines).encode()


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds to wait (delta-seconds or HTTP-date); None when unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class StetAuth(httpx.Auth):
    """X-Request-ID (and Digest, Signature) on every call; 429 waited out inside the budget."""

    requires_request_body = True

    def __init__(self, signer: RequestSigner | None) -> None:
        self.signer = signer

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Prepare request, send it, and resend it after a 429 when the wait fits."""
        request.headers["X-Request-ID"] = str(uuid.uuid4())
        if self.signer is not None:
            self.signer.sign(request)
        for attempt in range(MAX_RETRIES_429 + 1):
            response = yield request
            if response.status_code != 429 or attempt == MAX_RETRIES_429:
                return
            wait = retry_after_seconds(response.headers.get("retry-after"))
            if wait is None or not _fits(wait):
                return  # the 429 itself reaches the adapter: an upstream error
            await asyncio.sleep(wait)


def _fits(wait: float) -> bool:
    deadline = DEADLINE.get()
    if deadline is None:
        return wait <= MAX_WAIT_WITHOUT_DEADLINE_S
    return time.monotonic() + wait + RETRY_MARGIN_S < deadline


def resolve_href(base: httpx.URL, href: str) -> str:
    """A HAL href as an absolute URL of the bank's API; refuses another origin.

    Banks write hrefs absolute (``https://host/stet/v1/accounts``), server-absolute
    (``/stet/v1/accounts``) or relative to the API root, sometimes repeating the root's
    last segments (``v1/accounts`` under ``.../stet/v1``): the repeated segments are
    folded, so that ``v1/accounts`` never becomes ``.../v1/v1/accounts``.
    """
    url = httpx.URL(href)
    if url.is_absolute_url or href.startswith("//"):
        if href.startswith("//"):
            url = httpx.URL(f"{base.scheme}:{href}")
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            # Following it would send the PSU token to whoever the payload names.
            raise SourceFormatError("link to a foreign origin")
        return str(url)
    if href.startswith("/"):
        return str(base.copy_with(raw_path=href.encode()))
    root = [s for s in base.path.split("/") if s]
    path, _, query = href.partition("?")
    parts = [s for s in path.split("/") if s not in ("", ".")]
    overlap = 0
    for k in range(min(len(root), len(parts)), 0, -1):
        if root[-k:] == parts[:k]:
            overlap = k
            break
    joined = "/" + "/".join(root + parts[overlap:])
    raw = joined + (f"?{query}" if query else "")
    return str(base.copy_with(raw_path=raw.encode()))


_NUMERIC_AMOUNT = re.compile(rb'"amount"\s*:\s*-?[0-9]')


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_exact(content: bytes) -> Any:
    """JSON whose decimal numbers become Decimal from their text, never a binary float.

    Banks sending amounts as strings (most) take orjson's fast path; a body with a
    numeric amount is read again with the standard parser and ``parse_float=Decimal``.
    Raises ValueError on invalid JSON.
    """
    if _NUMERIC_AMOUNT.search(content) is None:
        return orjson.loads(content)
    try:
        return json.loads(content, parse_float=Decimal, parse_constant=_no_constants)
    except RecursionError as error:
        raise ValueError("JSON nested too deeply") from error


@dataclass(frozen=True, slots=True)
class StetClient:
    """The STET client of one bank: its directory entry and its pooled, signing client."""

    bank: Bank
    http: httpx.AsyncClient
    history_days: int = DEFAULT_HISTORY_DAYS

    def href(self, href: str) -> str:
        """A HAL href of this bank as an absolute URL (another origin is refused)."""
        return resolve_href(self.http.base_url, href)

    async def aclose(self) -> None:
        """Close the pool."""
        await self.http.aclose()
