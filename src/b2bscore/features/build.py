"""Raw normalized provider data -> the model's named feature vector (pure, no clock)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from b2bscore.features import accounting as _accounting
from b2bscore.features import bank as _bank
from b2bscore.features import registry as _registry
from b2bscore.features import request as _request
from b2bscore.features.catalog import FEATURE_INDEX, FEATURE_NAMES
from b2bscore.features.types import CreditRequest
from b2bscore.sources.types import AccountingData, BankData, RegistryData

# Order in which the family builders emit their values; mapped once onto FEATURE_NAMES.
_EMIT_ORDER: tuple[str, ...] = (
    *_bank.NAMES,
    *_accounting.NAMES,
    *_registry.NAMES,
    *_request.NAMES,
    "has_bank",
    "has_books",
)
if sorted(_EMIT_ORDER) != sorted(FEATURE_NAMES):  # pragma: no cover - import-time guard
    raise RuntimeError("feature builders and catalog disagree")
_PERMUTATION = np.asarray([FEATURE_INDEX[n] for n in _EMIT_ORDER], dtype=np.intp)
_INFLOWS = _bank.NAMES.index("bank_inflows_90d")
_REVENUE = _accounting.NAMES.index("annual_revenue")


@dataclass(frozen=True, eq=False)
class FeatureVector:
    """Feature values ordered as FEATURE_NAMES; NaN marks a missing value."""

    values: np.ndarray

    def get(self, name: str) -> float | None:
        """Value of one feature, None when missing."""
        v = float(self.values[FEATURE_INDEX[name]])
        return None if math.isnan(v) else v

    def as_dict(self) -> dict[str, float | None]:
        """JSON-safe mapping of feature name to value (None for missing)."""
        return {
            name: (None if math.isnan(v) else v)
            for name, v in zip(FEATURE_NAMES, self.values.tolist(), strict=True)
        }

    def row(self) -> np.ndarray:
        """The values as a (1, n_features) matrix for the model."""
        return self.values.reshape(1, -1)


def build_features(
    bank: BankData | None,
    books: AccountingData | None,
    record: RegistryData | None,
    request: CreditRequest,
) -> FeatureVector:
    """Compute every catalog feature from the normalized sources and the request."""
    b = _bank.bank_features(bank)
    a = _accounting.accounting_features(books)
    r = _registry.registry_features(record)
    q = _request.request_features(request, a[_REVENUE], b[_INFLOWS])
    emitted = (
        *b,
        *a,
        *r,
        *q,
        0.0 if bank is None else 1.0,
        0.0 if books is None or not books.statements else 1.0,
    )
    values = np.empty(len(FEATURE_NAMES), dtype=np.float64)
    values[_PERMUTATION] = emitted
    values.flags.writeable = False
    return FeatureVector(values=values)
