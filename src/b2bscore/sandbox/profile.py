"""How the sandbox misbehaves: latency and faults per provider (docs/WORLD.md).

Latency and faults are not random per request: each is drawn from a keyed hash of the
profile's seed (by default the UTC day), the provider and the call (its path and query,
which name the company). A lender testing an integration sees the same company's registry
time out on every try that day, and the same requests get the same answers however many
clients send them; across companies the published rates and latencies hold.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_VAR = "B2BSCORE_SANDBOX_PROFILE"
Provider = Literal["open_banking", "sirene", "bodacc", "accounting"]
_Z99 = 2.3263478740408408  # standard normal 99th percentile
_NORMAL = NormalDist()


class ProviderProfile(BaseModel):
    """Latency (log-normal, by median and p99) and fault rates of one provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_ms: float = Field(default=0.0, ge=0)
    p99_ms: float = Field(default=0.0, ge=0)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    truncated_rate: float = Field(default=0.0, ge=0, le=1)

    def latency_s(self, u: float) -> float:
        """The latency in seconds at quantile u of the log-normal; 0 when the median is 0."""
        if self.median_ms <= 0:
            return 0.0
        sigma = max(0.0, math.log(max(self.p99_ms, self.median_ms) / self.median_ms) / _Z99)
        z = _NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12))
        return math.exp(math.log(self.median_ms) + sigma * z) / 1000.0

    def fault(self, u: float) -> str | None:
        """timeout, error, malformed or None for the draw u in [0, 1)."""
        r = u
        for name, rate in (
            ("timeout", self.timeout_rate),
            ("error", self.error_rate),
            ("malformed", self.malformed_rate),
        ):
            if r < rate:
                return name
            r -= rate
        return None


class Draws:
    """Uniform draws in [0, 1) keyed by a seed and the parts that name a call."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self._key = hashlib.blake2b(seed.encode(), digest_size=32).digest()

    def uniform(self, *parts: str) -> float:
        """The draw of one call: the same parts and seed always give the same value."""
        digest = hashlib.blake2b("\x1f".join(parts).encode(), key=self._key, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64


class SandboxProfile(BaseModel):
    """Per-provider behaviour of the sandbox; presets `zero` and `realistic`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    open_banking: ProviderProfile = ProviderProfile()
    sirene: ProviderProfile = ProviderProfile()
    bodacc: ProviderProfile = ProviderProfile()
    accounting: ProviderProfile = ProviderProfile()
    # How long a "hanging" request sleeps; it ends early when the client goes away.
    hang_s: float = Field(default=30.0, gt=0)
    # What the draws are keyed by besides the call; None: the UTC day, so that a company's
    # faults hold all day and change from one day to the next.
    seed: str | None = None

    def draws(self, now: datetime | None = None) -> Draws:
        """The keyed draws of this profile, for the seed in force at `now`."""
        seed = self.seed
        if seed is None:
            seed = (now or datetime.now(UTC)).date().isoformat()
        return Draws(seed)

    def provider(self, name: Provider) -> ProviderProfile:
        """Settings of one provider."""
        p: ProviderProfile = getattr(self, name)
        return p

    @classmethod
    def preset(cls, name: str) -> SandboxProfile:
        """A named preset: `zero` or `realistic`."""
        if name == "zero":
            return cls(name="zero")
        if name == "realistic":
            return cls(
                name="realistic",
                open_banking=ProviderProfile(
                    median_ms=45,
                    p99_ms=280,
                    timeout_rate=0.01,
                    error_rate=0.005,
                    malformed_rate=0.001,
                    truncated_rate=0.002,
                ),
                sirene=ProviderProfile(
                    median_ms=35, p99_ms=220, timeout_rate=0.01, error_rate=0.005
                ),
                bodacc=ProviderProfile(
                    median_ms=40, p99_ms=250, timeout_rate=0.01, error_rate=0.005
                ),
                accounting=ProviderProfile(
                    median_ms=40,
                    p99_ms=250,
                    timeout_rate=0.01,
                    error_rate=0.005,
                    malformed_rate=0.001,
                ),
            )
        raise ValueError(f"unknown sandbox profile preset {name!r} (zero, realistic)")

    @classmethod
    def parse(cls, text: str) -> SandboxProfile:
        """A preset name or a JSON object; a JSON object may start from {"preset": name}."""
        text = text.strip()
        if not text.startswith("{"):
            return cls.preset(text or "zero")
        raw = json.loads(text)
        preset = raw.pop("preset", None)
        if preset is None:
            return cls.model_validate(raw)
        base = cls.preset(str(preset)).model_dump()
        for key, value in raw.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key].update(value)
            else:
                base[key] = value
        return cls.model_validate(base)

    @classmethod
    def from_env(cls) -> SandboxProfile:
        """The profile named (or spelled out as JSON) in B2BSCORE_SANDBOX_PROFILE; default zero."""
        return cls.parse(os.environ.get(ENV_VAR, "zero"))
