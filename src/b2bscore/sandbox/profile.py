"""How the sandbox misbehaves: latency and random faults per provider (docs/WORLD.md)."""

from __future__ import annotations

import json
import math
import os
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_VAR = "B2BSCORE_SANDBOX_PROFILE"
Provider = Literal["open_banking", "sirene", "bodacc", "accounting"]
_Z99 = 2.3263478740408408  # standard normal 99th percentile


class ProviderProfile(BaseModel):
    """Latency (log-normal, by median and p99) and fault rates of one provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_ms: float = Field(default=0.0, ge=0)
    p99_ms: float = Field(default=0.0, ge=0)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    truncated_rate: float = Field(default=0.0, ge=0, le=1)

    def latency_s(self, rng: random.Random) -> float:
        """One latency draw in seconds; 0 when the median is 0."""
        if self.median_ms <= 0:
            return 0.0
        sigma = max(0.0, math.log(max(self.p99_ms, self.median_ms) / self.median_ms) / _Z99)
        return rng.lognormvariate(math.log(self.median_ms), sigma) / 1000.0

    def fault(self, rng: random.Random) -> str | None:
        """timeout, error, malformed or None, drawn once per request."""
        r = rng.random()
        for name, rate in (
            ("timeout", self.timeout_rate),
            ("error", self.error_rate),
            ("malformed", self.malformed_rate),
        ):
            if r < rate:
                return name
            r -= rate
        return None


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
