"""Bank features: 90-day cash flows, reconstructed daily balance, incidents, history.

All day counts are relative to ``BankData.as_of`` (no clock). Only booked (BOOK)
transactions count: the closing booked balance (CLBD) only reflects booked entries, so
pending ones would break the backwards balance reconstruction. Accounts are consolidated:
the company's treasury is what repays, not any single account.
"""

from __future__ import annotations

import math

import numpy as np

from b2bscore.sources.types import REJECT_MARKERS, BankData

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
_REJECT_MARKERS = REJECT_MARKERS
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
    if bank is None or not bank.transactions_granted:
        # Every bank feature reads the history (even cash cover needs the outflows).
        return _MISSING
    # A pure function of the (frozen) record: computed once per parsed record, which the
    # source cache hands to every decision on that company while it is fresh.
    values: tuple[float, ...] | None = bank.derived.get(__name__)
    if values is None:
        values = _computed_bank_features(bank)
        bank.derived[__name__] = values
    return values


def _computed_bank_features(bank: BankData) -> tuple[float, ...]:
    closing_total = 0.0
    has_balance = False
    eur: list[bool] = []
    balanced: list[bool] = []
    for acc in bank.accounts:
        is_eur = acc.currency == "EUR"  # mixing currencies would make every sum meaningless
        eur.append(is_eur)
        balanced.append(acc.balance is not None)
        if is_eur and acc.balance is not None:
            has_balance = True
            closing_total += float(acc.balance)
    closing = closing_total if has_balance else None

    # Columns of every account end to end, built at parse time: no per-transaction work.
    cols = bank.columns()
    assert cols.account is not None
    booked = cols.booked
    if not all(eur):
        booked = booked & np.asarray(eur, dtype=np.bool_)[cols.account]
    age = bank.as_of.toordinal() - cols.booking_ordinal
    if not booked.any():
        return _compute(_EMPTY_F, _EMPTY_I, _EMPTY_B, _EMPTY_B, closing, 0)
    oldest = max(int(age[booked].max()), 0)
    keep = booked & (age >= 0) & (age < _AXIS_DAYS)
    amt = cols.amount[keep]
    rej = (cols.marked(_REJECT_MARKERS) | cols.rejected_debit)[keep] & (amt > 0.0)
    if all(balanced):
        in_bal = np.ones(amt.size, dtype=np.bool_)
    else:
        in_bal = np.asarray(balanced, dtype=np.bool_)[cols.account[keep]]
    return _compute(amt, age[keep], rej, in_bal, closing, oldest)


_EMPTY_F = np.zeros(0, dtype=np.float64)
_EMPTY_B = np.zeros(0, dtype=np.bool_)
_EMPTY_I = np.zeros(0, dtype=np.int64)


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
        # eod.mean() / eod.std() with the same reductions, minus numpy's Python wrappers.
        mean = float(np.add.reduce(eod)) / WINDOW_DAYS
        dev = eod - mean
        std = math.sqrt(float(np.add.reduce(dev * dev)) / WINDOW_DAYS)
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
