"""Which bundle answers a request: an immutable snapshot swapped as one reference.

A request reads ``state.serving`` once and keeps the bundle it picked until it answers,
so a promotion never changes the model under a request in flight; the next request sees
the new snapshot. Reading a reference needs no lock: the event loop of a worker runs one
coroutine at a time and an attribute assignment is atomic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from b2bscore.model.bundle import ModelBundle

CANARY_BUCKETS = 100


def canary_bucket(siren: str) -> int:
    """Stable bucket 0-99 of a company: sha256 of its SIREN, so the split never moves."""
    return int.from_bytes(hashlib.sha256(siren.encode()).digest()[:8], "big") % CANARY_BUCKETS


@dataclass(slots=True)
class CanaryStats:
    """This worker's count of requests the canary answered and of those that failed."""

    requests: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class ServingModels:
    """The live bundle, and the shadow and canary when they are assigned."""

    live: ModelBundle
    shadow: ModelBundle | None = None
    canary: ModelBundle | None = None
    canary_percent: int = 0
    canary_tenants: frozenset[str] = field(default_factory=frozenset)
    # The model event this snapshot reflects (0: the start-up default, no registry row).
    event_id: int = 0
    canary_stats: CanaryStats = field(default_factory=CanaryStats)

    def for_request(self, siren: str, tenant_id: str) -> ModelBundle:
        """The bundle that decides for this company and tenant."""
        canary = self.canary
        if canary is None:
            return self.live
        if tenant_id in self.canary_tenants or canary_bucket(siren) < self.canary_percent:
            return canary
        return self.live
