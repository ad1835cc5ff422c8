"""TreeSHAP contributions -> ranked reason codes, one per feature family.

Correlated features (e.g. the bank and the books' views of liquidity) split the credit
for one risk driver between them; summing contributions per family before ranking keeps
the explanation at the level an applicant can act on and avoids listing the same driver
twice. Adverse reasons (raising the PD) come first, favourable ones fill remaining room.
"""

from __future__ import annotations

import math
import weakref
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


@dataclass(frozen=True)
class _FamilyIndex:
    names: tuple[str, ...]
    ids: np.ndarray  # family id of every feature
    members: tuple[tuple[int, ...], ...]  # feature indices of every family


@lru_cache(maxsize=8)
def _family_index(specs: tuple[FeatureSpec, ...]) -> _FamilyIndex:
    names: list[str] = []
    ids: list[int] = []
    for spec in specs:
        if spec.family not in names:
            names.append(spec.family)
        ids.append(names.index(spec.family))
    id_arr = np.asarray(ids, dtype=np.intp)
    members = tuple(tuple(np.flatnonzero(id_arr == k).tolist()) for k in range(len(names)))
    return _FamilyIndex(tuple(names), id_arr, members)


# Per bundle (by identity, dropped with the bundle): hashing 34 specs per call to find
# their family index in an lru_cache costs more than the rest of the explanation.
_PREPARED: weakref.WeakKeyDictionary[ModelBundle, tuple[tuple[FeatureSpec, ...], _FamilyIndex]]
_PREPARED = weakref.WeakKeyDictionary()


def _prepared(
    bundle_or_catalog: ModelBundle | Sequence[FeatureSpec],
) -> tuple[tuple[FeatureSpec, ...], _FamilyIndex]:
    if isinstance(bundle_or_catalog, ModelBundle):
        found = _PREPARED.get(bundle_or_catalog)
        if found is None:
            specs = tuple(SPECS_BY_NAME[name] for name in bundle_or_catalog.feature_names)
            found = (specs, _family_index(specs))
            _PREPARED[bundle_or_catalog] = found
        return found
    specs = tuple(bundle_or_catalog)
    return specs, _family_index(specs)


def explain(
    bundle_or_catalog: ModelBundle | Sequence[FeatureSpec],
    scored: Scored,
    vector: FeatureVector,
    limit: int = 4,
) -> list[Reason]:
    """Up to ``limit`` reasons: adverse families by decreasing contribution, then favourable."""
    specs, fam = _prepared(bundle_or_catalog)
    contrib = scored.contributions
    if len(contrib) != len(specs) or len(vector.values) != len(specs):
        raise ValueError("contributions, vector and catalog lengths differ")
    totals = np.bincount(fam.ids, weights=contrib, minlength=len(fam.names)).tolist()
    values = contrib.tolist()
    adverse = sorted(
        (k for k, v in enumerate(totals) if v > MIN_CONTRIBUTION),
        key=lambda k: (-totals[k], fam.names[k]),
    )
    favourable = sorted(
        (k for k, v in enumerate(totals) if v < -MIN_CONTRIBUTION),
        key=lambda k: (totals[k], fam.names[k]),
    )

    reasons: list[Reason] = []
    for k in (adverse + favourable)[: max(limit, 0)]:
        total = totals[k]
        idx = fam.members[k]
        # The family's representative is its feature pushing hardest in the family's way
        # (first one on a tie). Plain Python: families have 1-6 members.
        if total > 0.0:
            best = max(idx, key=lambda j: values[j])
        else:
            best = min(idx, key=lambda j: values[j])
        spec = specs[best]
        raw = float(vector.values[best])
        value = None if math.isnan(raw) else raw
        label_fr, label_en = spec.render(value)
        reasons.append(
            Reason(
                code=spec.reason_code,
                family=fam.names[k],
                direction="adverse" if total > 0.0 else "favourable",
                contribution=total,
                feature=spec.name,
                value=value,
                label_fr=label_fr,
                label_en=label_en,
            )
        )
    return reasons
