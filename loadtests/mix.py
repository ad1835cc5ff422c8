"""The request mix of the load tests: many companies, repeat customers, fault scenarios."""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from b2bscore.features.types import Product
from b2bscore.training.world import SCENARIOS, sample_sirens

PRODUCTS: tuple[str, ...] = tuple(p.value for p in Product)
# Ticket sizes per product (EUR, log-uniform between the bounds): BNPL baskets are small,
# term loans large; whole euros and cents both appear so the decimal path is exercised.
_AMOUNTS: dict[str, tuple[float, float]] = {
    "bnpl": (200.0, 20_000.0),
    "invoice_financing": (1_000.0, 250_000.0),
    "credit_line": (2_000.0, 300_000.0),
    "term_loan": (5_000.0, 1_000_000.0),
}


@dataclass(frozen=True, slots=True)
class MixSpec:
    """Shares of the mix: repeat customers and fault scenarios, the rest is fresh SIRENs.

    The defaults draw the companies of the sandbox directory (consents/sandbox.py: the
    same seed and 5,000 + 200 SIRENs), whose consented companies the embedded default
    syncs ahead.
    """

    distinct: int = 5000
    repeat_pool: int = 200
    repeat_share: float = 0.20
    scenario_share: float = 0.02
    seed: int = 20_261_101


class RequestMix:
    """Draws request bodies; one instance per user so that draws need no lock."""

    def __init__(self, spec: MixSpec = MixSpec(), rng_seed: int | None = None) -> None:
        self.spec = spec
        sirens = sample_sirens(spec.distinct + spec.repeat_pool, spec.seed)
        # Disjoint pools: a repeat customer is not also drawn as a "new" company.
        self.repeat = sirens[: spec.repeat_pool]
        self.fresh = sirens[spec.repeat_pool :]
        self.scenarios = tuple(SCENARIOS.values())
        self.rng = random.Random(rng_seed)

    def siren(self) -> str:
        """One SIREN of the mix."""
        r = self.rng.random()
        if r < self.spec.scenario_share:
            return self.rng.choice(self.scenarios)
        if r < self.spec.scenario_share + self.spec.repeat_share:
            return self.rng.choice(self.repeat)
        return self.rng.choice(self.fresh)

    def body(self) -> dict[str, str]:
        """One POST /v1/score body; amounts as decimal strings, never floats."""
        product = self.rng.choice(PRODUCTS)
        low, high = _AMOUNTS[product]
        amount = low * (high / low) ** self.rng.random()
        cents = self.rng.choice((0, 0, 0, 50, self.rng.randrange(100)))
        siren = self.siren()
        # A tenth of the callers send the SIREN spaced as printed on a Kbis extract.
        if self.rng.random() < 0.1:
            siren = f"{siren[:3]} {siren[3:6]} {siren[6:]}"
        return {
            "siren": siren,
            "requested_amount": f"{int(amount)}.{cents:02d}",
            "product": product,
        }

    def payload(self) -> bytes:
        """body() as JSON bytes."""
        return orjson.dumps(self.body())
