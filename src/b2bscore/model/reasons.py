"""TreeSHAP contributions -> ranked reason codes, one per feature family.

Correlated features (e.g. the bank and the books' views of liquidity) split the credit
for one risk driver between them; summing contributions per family before ranking keeps
the explanation at the level an applicant can act on and avoids listing the same driver
twice. Adverse reasons (raising the PD) come first, favourable ones fill remaining room.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from b2bscore.features.build import FeatureVector
from b2bscore.features.catalog import SPECS_BY_NAME, FeatureSpec
from b2bscore.model.bundle import ModelBundle
from b2bscore.model.scorer import Scored

Direction = Literal["adverse", "favourable"]
# Contributions below this (log-odds) are noise, not a reason.
MIN_CONTRIBUTION = 1e-6


@dataclass(frozen=True)
class Reason:
    """One explanation line: a family's combined effect or a policy rule."""

    code: str
    family: str
    direction: Direction
    contribution: float
    feature: str
    value: float | None
    label_fr: str
    label_en: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


@lru_cache(maxsize=8)
def _families(specs: tuple[FeatureSpec, ...]) -> tuple[tuple[str, np.ndarray], ...]:
    order: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        order.setdefault(spec.family, []).append(i)
    return tuple((fam, np.asarray(idx, dtype=np.intp)) for fam, idx in order.items())


def _specs(bundle_or_catalog: ModelBundle | Sequence[FeatureSpec]) -> tuple[FeatureSpec, ...]:
    if isinstance(bundle_or_catalog, ModelBundle):
        return tuple(SPECS_BY_NAME[name] for name in bundle_or_catalog.feature_names)
    return tuple(bundle_or_catalog)


def explain(
    bundle_or_catalog: ModelBundle | Sequence[FeatureSpec],
    scored: Scored,
    vector: FeatureVector,
    limit: int = 4,
) -> list[Reason]:
    """Up to ``limit`` reasons: adverse families by decreasing contribution, then favourable."""
    specs = _specs(bundle_or_catalog)
    contrib = scored.contributions
    if len(contrib) != len(specs) or len(vector.values) != len(specs):
        raise ValueError("contributions, vector and catalog lengths differ")
    adverse: list[tuple[float, str, np.ndarray]] = []
    favourable: list[tuple[float, str, np.ndarray]] = []
    for family, idx in _families(specs):
        total = float(contrib[idx].sum())
        if total > MIN_CONTRIBUTION:
            adverse.append((total, family, idx))
        elif total < -MIN_CONTRIBUTION:
            favourable.append((total, family, idx))
    adverse.sort(key=lambda t: (-t[0], t[1]))
    favourable.sort(key=lambda t: (t[0], t[1]))

    reasons: list[Reason] = []
    for total, family, idx in (adverse + favourable)[: max(limit, 0)]:
        sign = 1.0 if total > 0.0 else -1.0
        # The family's representative is its feature pushing hardest in the family's way.
        best = int(idx[int(np.argmax(sign * contrib[idx]))])
        spec = specs[best]
        raw = float(vector.values[best])
        value = None if math.isnan(raw) else raw
        label_fr, label_en = spec.render(value)
        reasons.append(
            Reason(
                code=spec.reason_code,
                family=family,
                direction="adverse" if total > 0.0 else "favourable",
                contribution=total,
                feature=spec.name,
                value=value,
                label_fr=label_fr,
                label_en=label_en,
            )
        )
    return reasons
