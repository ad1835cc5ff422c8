"""Bank features: 90-day cash flows, reconstructed daily balance, incidents, history.

All day counts are relative to ``BankData.as_of`` (no clock). Only booked (BOOK)
transactions count: the closing booked balance (CLBD) only reflects booked entries, so
pending ones would break the backwards balance reconstruction. Accounts are consolidated:
the company's treasury is what repays, not any single account.
"""

from __future__ import annotations

import math

import numpy as np

from b2bscore.sources.types import BankData

NAMES: tuple[str, ...] = (
    "bank_inflows_90d",
    "bank_outflows_90d",
    "bank_net_flow_ratio_90d",
    "bank_net_flow_trend",
    "bank_negative_balance_days",
    "bank_balance_volatility",
    "bank_cash_cover_months",
    "bank_rejected_debits_90d",
    "bank_history_months",
)

WINDOW_DAYS = 90
TREND_WEEKS = 13
DAYS_PER_MONTH = 30.4375
MAX_VOLATILITY = 10.0
MAX_COVER_MONTHS = 24.0
_NAN = math.nan
_MISSING: tuple[float, ...] = (_NAN,) * len(NAMES)
_REJECT_MARKERS = ("REJET", "IMPAY")  # IMPAYE, IMPAYÉ
# Entries older than this cannot move any feature (13 trend weeks cover 91 days).
_AXIS_DAYS = max(WINDOW_DAYS, TREND_WEEKS * 7)
# Week 0 is the most recent week, so time runs forwards as the week index falls.
_WEEK_T = -np.arange(TREND_WEEKS, dtype=np.float64)
_WEEK_T_CENTRED = _WEEK_T - _WEEK_T.mean()
_WEEK_T_SS = float((_WEEK_T_CENTRED**2).sum())


def is_rejected_debit_refund(amount: float, remittance: str) -> bool:
    """True for the credit that reverses a rejected direct debit (REJET / IMPAYE)."""
    if amount <= 0.0:
        return False
    up = remittance.upper()
    return any(m in up for m in _REJECT_MARKERS)


def bank_features(bank: BankData | None) -> tuple[float, ...]:
    """Bank features in ``NAMES`` order; all NaN when there is no bank data."""
    if bank is None:
        return _MISSING
    as_of = bank.as_of.toordinal()

    amt_parts: list[np.ndarray] = []
    age_parts: list[np.ndarray] = []
    bal_parts: list[np.ndarray] = []
    rej_parts: list[np.ndarray] = []
    closing_total = 0.0
    has_balance = False
    oldest = 0
    for acc in bank.accounts:
        if acc.currency != "EUR":
            continue  # mixing currencies would make every sum meaningless
        if acc.balance is not None:
            has_balance = True
            closing_total += float(acc.balance)
        # Columns are cached on the parsed record: no per-transaction Python work here.
        cols = acc.columns()
        if not cols.booked.any():
            continue
        age = as_of - cols.booking_ordinal
        oldest = max(oldest, int(age[cols.booked].max()))
        keep = cols.booked & (age >= 0) & (age < _AXIS_DAYS)
        amt = cols.amount[keep]
        rej = cols.marked(_REJECT_MARKERS)[keep] & (amt > 0.0)
        amt_parts.append(amt)
        age_parts.append(age[keep])
        rej_parts.append(rej)
        bal_parts.append(np.full(amt.size, acc.balance is not None, dtype=np.bool_))

    closing = closing_total if has_balance else None
    if len(amt_parts) == 1:
        return _compute(amt_parts[0], age_parts[0], rej_parts[0], bal_parts[0], closing, oldest)
    if not amt_parts:
        empty_f = np.zeros(0, dtype=np.float64)
        empty_b = np.zeros(0, dtype=np.bool_)
        empty_i = np.zeros(0, dtype=np.int64)
        return _compute(empty_f, empty_i, empty_b, empty_b, closing, oldest)
    return _compute(
        np.concatenate(amt_parts),
        np.concatenate(age_parts),
        np.concatenate(rej_parts),
        np.concatenate(bal_parts),
        closing,
        oldest,
    )


def _compute(
    amt: np.ndarray,
    age: np.ndarray,
    rej: np.ndarray,
    in_bal: np.ndarray,
    closing: float | None,
    oldest: int,
) -> tuple[float, ...]:
    """Features from window entries (0 <= age < _AXIS_DAYS) of EUR accounts."""
    history_months = oldest / DAYS_PER_MONTH
    win = age < WINDOW_DAYS
    a_win = amt[win]
    rej_win = rej[win]
    refunds = float(a_win[rej_win].sum())
    inflows = float(a_win[(a_win > 0.0) & ~rej_win].sum())
    # A refund cancels the rejected debit, so it is netted out of the outflows.
    outflows = max(float(-a_win[a_win < 0.0].sum()) - refunds, 0.0)
    rejects = float(rej_win.sum())

    if inflows > 0.0:
        net_ratio = max((inflows - outflows) / inflows, -5.0)
    elif outflows > 0.0:
        net_ratio = -5.0
    else:
        net_ratio = _NAN

    trend = _NAN
    if inflows > 0.0:
        weekly = np.bincount(age // 7, weights=amt, minlength=TREND_WEEKS)
        slope = float(_WEEK_T_CENTRED @ weekly) / _WEEK_T_SS
        trend = min(max(slope / (inflows / (WINDOW_DAYS / 7.0)), -2.0), 2.0)

    neg_days = vol = cover = _NAN
    if closing is not None:
        ok = win & in_bal
        daily = np.bincount(age[ok], weights=amt[ok], minlength=WINDOW_DAYS)
        # End-of-day balance i days before as_of = closing - flows booked after that day.
        eod = np.empty(WINDOW_DAYS, dtype=np.float64)
        eod[0] = closing
        eod[1:] = closing - np.cumsum(daily[: WINDOW_DAYS - 1])
        neg_days = float((eod < 0.0).sum())
        mean = float(eod.mean())
        std = float(eod.std())
        if mean != 0.0:
            vol = min(std / abs(mean), MAX_VOLATILITY)
        else:
            vol = MAX_VOLATILITY if std > 0.0 else 0.0
        monthly_out = outflows / (WINDOW_DAYS / DAYS_PER_MONTH)
        if monthly_out > 0.0:
            cover = min(max(closing / monthly_out, -MAX_COVER_MONTHS), MAX_COVER_MONTHS)
        else:
            cover = math.copysign(MAX_COVER_MONTHS, closing) if closing != 0.0 else 0.0

    return (
        inflows,
        outflows,
        net_ratio,
        trend,
        neg_days,
        vol,
        cover,
        rejects,
        history_months,
    )
