"""Per-key rate limits over the shared cache (Redis across processes)."""

from __future__ import annotations

import math

from b2bscore.kit.problems import Problem
from b2bscore.kit.settings import Settings
from b2bscore.tenants.service import Principal

WINDOW_SECONDS = 60


def rate_key(principal: Principal) -> str:
    """Cache key under which the key's hits are counted."""
    return f"rl:{principal.key_id}"


def refuse_past_limit(
    principal: Principal, settings: Settings, hits: int, seconds_left: float
) -> None:
    """429 with Retry-After when hits exceed the key's per-minute limit."""
    limit = principal.rate_limit_per_minute or settings.rate_limit_per_minute
    if hits > limit:
        raise Problem(
            429,
            "rate_limited",
            "Too many requests",
            f"This key may make {limit} requests per minute.",
            headers={"Retry-After": str(max(1, math.ceil(seconds_left)))},
        )
