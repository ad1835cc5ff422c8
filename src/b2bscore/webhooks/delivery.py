"""One delivery attempt over HTTP, and the retry schedule.

Retried: timeouts, connection errors, 5xx, 408 and 429, and an address refused by the SSRF
rules (DNS may be fixed). Not retried: other 4xx and any redirect (never followed). The
schedule after attempt n is min(base * 3**(n-1), cap) with +/-20 % jitter: with the default
base 5 s and cap 12 h, 15 attempts span about three days (docs/WEBHOOKS.md).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

import httpx

from b2bscore.kit.settings import Settings
from b2bscore.webhooks.urls import UnsafeUrl, check_url, resolve

EXCERPT_BYTES: Final = 1024
JITTER: Final = 0.2
USER_AGENT: Final = "b2bscore-webhooks/1"

Outcome = Literal["succeeded", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt gave."""

    outcome: Outcome
    status_code: int | None
    error: str | None
    latency_ms: float
    excerpt: str | None


# A generator of its own: the global one's state belongs to whoever seeded it (tests).
_JITTER_RNG = random.Random()  # noqa: S311 - jitter, not a secret


def retry_delay(attempt: int, settings: Settings, rng: random.Random | None = None) -> timedelta:
    """Wait after failed attempt number `attempt` (1-based): exponential, capped, jittered."""
    base = settings.webhook_retry_base_seconds * 3 ** (attempt - 1)
    delay = min(base, settings.webhook_retry_cap_seconds)
    factor = 1 + (rng or _JITTER_RNG).uniform(-JITTER, JITTER)
    return timedelta(seconds=delay * factor)


def schedule_span(settings: Settings) -> timedelta:
    """Time from the first attempt to the last, without jitter."""
    return sum(
        (
            timedelta(
                seconds=min(
                    settings.webhook_retry_base_seconds * 3 ** (n - 1),
                    settings.webhook_retry_cap_seconds,
                )
            )
            for n in range(1, settings.webhook_max_attempts)
        ),
        timedelta(),
    )


def _classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return "succeeded"
    if status >= 500 or status in (408, 429):
        return "retry"
    return "failed"


async def attempt(
    client: httpx.AsyncClient,
    *,
    url: str,
    mode: str,
    headers: dict[str, str],
    body: bytes,
    timeout: float,  # noqa: ASYNC109 - a per-request HTTP timeout, handed to httpx
) -> AttemptResult:
    """POST body to url once, connecting to the address checked for mode."""
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 3)

    try:
        target = await resolve(check_url(url, mode), mode)
    except UnsafeUrl as error:
        return AttemptResult("retry", None, f"refused: {error}"[:300], elapsed(), None)
    original = target.url
    host = original.host
    address = f"[{target.address}]" if ":" in target.address else target.address
    # Connect to the checked address; the name still goes in Host and in TLS (SNI and the
    # certificate check), so nothing resolves the name a second time.
    request = client.build_request(
        "POST",
        original.copy_with(host=address.strip("[]")),
        content=body,
        headers={
            **headers,
            "Host": original.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        },
        extensions={"sni_hostname": host, "timeout": httpx.Timeout(timeout).as_dict()},
    )
    try:
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            excerpt = await _excerpt(response)
        finally:
            await response.aclose()
    except httpx.TimeoutException:
        return AttemptResult("retry", None, "timeout", elapsed(), None)
    except httpx.TransportError as error:
        return AttemptResult("retry", None, f"connection: {type(error).__name__}", elapsed(), None)
    outcome = _classify(response.status_code)
    problem = None
    if 300 <= response.status_code < 400:
        problem = "redirect not followed"
    elif outcome != "succeeded":
        problem = f"HTTP {response.status_code}"
    return AttemptResult(outcome, response.status_code, problem, elapsed(), excerpt)


async def _excerpt(response: httpx.Response) -> str:
    """At most EXCERPT_BYTES of the answer, read no further."""
    taken = bytearray()
    async for chunk in response.aiter_bytes():
        taken.extend(chunk)
        if len(taken) >= EXCERPT_BYTES:
            break
    return bytes(taken[:EXCERPT_BYTES]).decode("utf-8", "replace")
