"""Request features: the requested amount against the company's size."""

from __future__ import annotations

import math

from b2bscore.features.types import CreditRequest

NAMES: tuple[str, ...] = (
    "request_to_revenue",
    "request_to_monthly_inflows",
    "log_requested_amount",
)

MAX_TO_REVENUE = 50.0
MAX_TO_INFLOWS = 500.0
_NAN = math.nan


def request_features(
    request: CreditRequest, annual_revenue: float, inflows_90d: float
) -> tuple[float, ...]:
    """Request features in ``NAMES`` order; ratios are NaN when their base is missing."""
    amount = float(request.requested_amount)
    to_revenue = _NAN
    if annual_revenue > 0.0:
        to_revenue = min(amount / annual_revenue, MAX_TO_REVENUE)
    elif annual_revenue == annual_revenue:  # books present but no revenue at all
        to_revenue = MAX_TO_REVENUE
    to_inflows = _NAN
    if inflows_90d > 0.0:
        to_inflows = min(amount / (inflows_90d / 3.0), MAX_TO_INFLOWS)
    elif inflows_90d == inflows_90d:  # bank connected but nothing comes in
        to_inflows = MAX_TO_INFLOWS
    return (to_revenue, to_inflows, math.log1p(max(amount, 0.0)))
