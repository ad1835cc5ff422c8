"""Rate limits over the shared cache (Redis across processes).

A tenant's limit is shared by all of its keys of one mode: `keys set-rate-limit --tenant`
sets it per tenant, and test traffic never eats into the live allowance. Requests that
present no valid key are limited per client address, so that probing keys or flooding
the 401 path costs an attacker as much as it costs us.
"""

from __future__ import annotations

import math

from b2bscore.kit.problems import Problem
from b2bscore.kit.settings import Settings
from b2bscore.tenants.service import Principal

WINDOW_SECONDS = 60


def rate_key(principal: Principal) -> str:
    """Cache key under which the hits of the principal's tenant, in its mode, are counted."""
    return f"rl:{principal.tenant_id}:{principal.mode}"


def unauthenticated_rate_key(client_address: str) -> str:
    """Cache key under which requests without a valid key are counted, per address."""
    return f"rl:anon:{client_address}"


def _too_many(detail: str, seconds_left: float) -> Problem:
    return Problem(
        429,
        "rate_limited",
        "Too many requests",
        detail,
        headers={"Retry-After": str(max(1, math.ceil(seconds_left)))},
    )


def refuse_past_limit(
    principal: Principal, settings: Settings, hits: int, seconds_left: float
) -> None:
    """429 with Retry-After when hits exceed the tenant's per-minute limit in this mode."""
    limit = principal.rate_limit_per_minute or settings.rate_limit_per_minute
    if hits > limit:
        raise _too_many(
            f"This tenant may make {limit} {principal.mode} requests per minute.", seconds_left
        )


def refuse_unauthenticated_past_limit(settings: Settings, hits: int, seconds_left: float) -> None:
    """429 with Retry-After when an address exceeds its unauthenticated allowance."""
    limit = settings.unauthenticated_rate_limit_per_minute
    if hits > limit:
        raise _too_many(
            f"Too many requests without a valid API key from this address ({limit} per minute).",
            seconds_left,
        )
