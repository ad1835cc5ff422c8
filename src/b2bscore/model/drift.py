"""Population stability: binned reference distributions and the PSI against recent data.

A bundle carries, for every feature and for the score, the bin edges of its training
rows (deciles of the non-missing values, taken at observed values, ties merged) and the
share of training rows in each bin, missing values in a bin of their own. Serving data is
binned on the same edges;

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with every share floored at ``PSI_FLOOR`` so that an empty bin gives a large but finite
term instead of infinity. Usual reading: below 0.1 stable, 0.1-0.25 watch, above 0.25 act.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
DEFAULT_BINS = 10
PSI_FLOOR = 1e-4
PSI_WATCH = 0.1
PSI_ACT = 0.25


@dataclass(frozen=True, slots=True)
class Binned:
    """Bin edges of one variable and the expected share of each bin (missing first)."""

    edges: tuple[float, ...]
    expected: tuple[float, ...]  # [missing, bin 0, ..., bin len(edges)]

    def counts(self, values: Sequence[float | None] | np.ndarray) -> np.ndarray:
        """How many values fall in each bin (missing first), on this variable's edges."""
        arr = np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        return bin_counts(arr, self.edges)

    def psi(self, values: Sequence[float | None] | np.ndarray) -> float:
        """PSI of values against this reference; NaN when there is no value at all."""
        counts = self.counts(values)
        total = counts.sum()
        if total == 0:
            return math.nan
        return psi(self.expected, counts / total)

    def to_json(self) -> dict[str, Any]:
        """JSON form stored in reference.json."""
        return {"edges": list(self.edges), "expected": list(self.expected)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Binned:
        """Inverse of ``to_json``."""
        edges = tuple(float(e) for e in doc["edges"])
        expected = tuple(float(p) for p in doc["expected"])
        if len(expected) != len(edges) + 2:
            raise ValueError("expected shares must number the edges plus two")
        return cls(edges, expected)


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts per bin: [missing, (-inf, e0], (e0, e1], ..., (e_last, inf)]."""
    missing = np.isnan(values)
    present = values[~missing]
    # side="left": a value equal to an edge belongs to the bin the edge closes.
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), present, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return np.concatenate([[float(missing.sum())], counts])


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def fit_bins(values: np.ndarray, bins: int = DEFAULT_BINS) -> Binned:
    """Quantile bins of the non-missing values (ties merged) and their training shares."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if present.size == 0:
        edges: tuple[float, ...] = ()
    else:
        quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
        unique = np.unique(quantiles)
        # An edge at the maximum would leave its upper bin empty by construction.
        edges = tuple(float(q) for q in unique if q < present.max())
    counts = bin_counts(values, edges)
    total = counts.sum()
    shares = counts / total if total else counts
    return Binned(edges, tuple(float(s) for s in shares))


@dataclass(frozen=True, slots=True)
class Reference:
    """The training distributions a bundle is compared against."""

    features: Mapping[str, Binned]
    score: Binned
    n: int
    source: str

    def to_json(self) -> dict[str, Any]:
        """The reference.json document."""
        return {
            "format": REFERENCE_FORMAT,
            "source": self.source,
            "n": self.n,
            "score": self.score.to_json(),
            "features": {name: b.to_json() for name, b in self.features.items()},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Reference:
        """Inverse of ``to_json``; ValueError on a malformed document."""
        if doc.get("format") != REFERENCE_FORMAT:
            raise ValueError("unsupported reference format")
        try:
            return cls(
                features={k: Binned.from_json(v) for k, v in doc["features"].items()},
                score=Binned.from_json(doc["score"]),
                n=int(doc["n"]),
                source=str(doc.get("source", "")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed reference: {exc}") from exc

    def write(self, path: Path) -> None:
        """Write reference.json (stable key order, so its hash is reproducible)."""
        path.write_text(reference_json(self), encoding="utf-8")


def reference_json(reference: Reference) -> str:
    """The text of reference.json."""
    return json.dumps(reference.to_json(), indent=1) + "\n"


def build_reference(
    x: np.ndarray,
    feature_names: Sequence[str],
    scores: np.ndarray,
    *,
    source: str,
    bins: int = DEFAULT_BINS,
) -> Reference:
    """Reference distributions of a training matrix and the scores it was given."""
    return Reference(
        features={name: fit_bins(x[:, i], bins) for i, name in enumerate(feature_names)},
        score=fit_bins(np.asarray(scores, dtype=np.float64), bins),
        n=int(x.shape[0]),
        source=source,
    )


@dataclass(frozen=True, slots=True)
class DriftReport:
    """PSI of every feature and of the score over a window of decisions."""

    window: str
    n: int
    score_psi: float | None
    features: dict[str, float | None]
    # Share of the window's scores in each bin of the reference (missing first), for charts.
    score_shares: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object printed by `b2bscore models drift`."""
        return {
            "window": self.window,
            "n": self.n,
            "score_psi": self.score_psi,
            "features": self.features,
        }


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def drift_report(
    reference: Reference,
    feature_rows: Iterable[Mapping[str, Any]] | None,
    scores: Sequence[float],
    *,
    window: str,
) -> DriftReport:
    """PSI of recorded feature dicts and scores against the reference (None: scores only)."""
    features: dict[str, float | None] = {}
    if feature_rows is None:
        rows: list[Mapping[str, Any]] = []
        n = len(scores)
    else:
        rows = list(feature_rows)
        n = len(rows)
        for name, binned in reference.features.items():
            column = [_number(row.get(name)) for row in rows]
            features[name] = _finite(binned.psi(column)) if rows else None
    score_psi = _finite(reference.score.psi([float(s) for s in scores])) if scores else None
    counts = reference.score.counts([float(s) for s in scores])
    shares = tuple(float(c) / len(scores) for c in counts) if scores else ()
    return DriftReport(
        window=window, n=n, score_psi=score_psi, features=features, score_shares=shares
    )


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
