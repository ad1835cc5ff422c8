"""Accounting features: Altman ratios and the usual credit ratios from the latest year."""

from __future__ import annotations

import math

from b2bscore.sources.types import AccountingData

NAMES: tuple[str, ...] = (
    "working_capital_to_assets",
    "current_ratio",
    "cash_ratio",
    "retained_earnings_to_assets",
    "equity_to_liabilities",
    "ebit_to_assets",
    "ebitda_margin",
    "net_margin",
    "financial_debt_to_ebitda",
    "debt_ratio",
    "sales_to_assets",
    "revenue_growth",
    "annual_revenue",
)

_NAN = math.nan
_MISSING: tuple[float, ...] = (_NAN,) * len(NAMES)
RATIO_CAP = 20.0
LEVERAGE_CAP = 50.0


def _div(num: float, den: float, cap: float = math.inf) -> float:
    """num / den clipped to [-cap, cap]; NaN when the denominator is not positive."""
    if den <= 0.0:
        return _NAN
    return max(-cap, min(num / den, cap))


def accounting_features(books: AccountingData | None) -> tuple[float, ...]:
    """Accounting features in ``NAMES`` order; all NaN without a fiscal year."""
    if books is None or not books.statements:
        return _MISSING
    stmts = sorted(books.statements, key=lambda s: s.closing_date, reverse=True)
    s = stmts[0]
    revenue = float(s.revenue)
    ebitda = float(s.ebitda)
    ta = float(s.total_assets)
    cl = float(s.current_liabilities)
    tl = float(s.total_liabilities)
    debt = float(s.financial_debt)

    if debt <= 0.0:
        leverage = 0.0
    elif ebitda <= 0.0:
        leverage = LEVERAGE_CAP  # debt that operations do not service at all
    else:
        leverage = min(debt / ebitda, LEVERAGE_CAP)

    growth = _NAN
    if len(stmts) > 1:
        prev = float(stmts[1].revenue)
        if prev > 0.0:
            growth = max(-1.0, min(revenue / prev - 1.0, 5.0))

    return (
        _div(float(s.current_assets) - cl, ta),
        _div(float(s.current_assets), cl, RATIO_CAP) if cl > 0.0 else RATIO_CAP,
        _div(float(s.cash), cl, RATIO_CAP) if cl > 0.0 else RATIO_CAP,
        _div(float(s.retained_earnings), ta),
        _div(float(s.equity), tl, RATIO_CAP) if tl > 0.0 else RATIO_CAP,
        _div(float(s.ebit), ta),
        _div(ebitda, revenue),
        _div(float(s.net_income), revenue),
        leverage,
        _div(tl, ta),
        _div(revenue, ta, RATIO_CAP),
        growth,
        revenue,
    )
