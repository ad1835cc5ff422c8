"""Feature builders on hand-made normalized data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from b2bscore.features.bank import bank_features
from b2bscore.features.build import FeatureVector, build_features
from b2bscore.features.catalog import FEATURE_NAMES
from tests.features import factories as f


def _v(vector: FeatureVector, name: str) -> float | None:
    return vector.get(name)


def test_vector_order_and_json_safety() -> None:
    vec = build_features(None, None, None, f.request())
    assert vec.values.dtype == np.float64
    assert vec.values.shape == (len(FEATURE_NAMES),)
    d = vec.as_dict()
    assert list(d) == list(FEATURE_NAMES)
    json.dumps(d, allow_nan=False)
    assert d["has_bank"] == 0.0
    assert d["has_books"] == 0.0
    assert d["bank_inflows_90d"] is None
    assert d["current_ratio"] is None
    assert d["company_age_years"] is None
    assert d["request_to_revenue"] is None
    assert d["log_requested_amount"] == pytest.approx(math.log1p(20000))


def test_negative_balance_days_reconstructed_backwards() -> None:
    # Closing 100. Going back: before the +500 credit booked 10 days ago the balance was
    # -400, and before the -600 debit 30 days ago it was +200.
    data = f.bank(f.account("100.00", [f.tx(10, "500.00"), f.tx(30, "-600.00")]))
    vec = build_features(data, None, None, f.request())
    # End-of-day balances for days 10..29 before as_of are -400: 20 days.
    assert _v(vec, "bank_negative_balance_days") == 20.0
    assert _v(vec, "bank_inflows_90d") == 500.0
    assert _v(vec, "bank_outflows_90d") == 600.0
    assert _v(vec, "bank_net_flow_ratio_90d") == pytest.approx(-0.2)
    assert _v(vec, "has_bank") == 1.0


def test_pending_and_future_and_old_transactions_ignored_in_window() -> None:
    data = f.bank(
        f.account(
            "100.00",
            [
                f.tx(5, "-1000.00", status="PDNG"),
                f.tx(120, "-5000.00"),
                f.tx(3, "50.00"),
            ],
        )
    )
    vec = build_features(data, None, None, f.request())
    assert _v(vec, "bank_outflows_90d") == 0.0
    assert _v(vec, "bank_inflows_90d") == 50.0
    assert _v(vec, "bank_negative_balance_days") == 0.0
    assert _v(vec, "bank_history_months") == pytest.approx(120 / 30.4375)


def test_accounts_consolidated_and_foreign_currency_skipped() -> None:
    data = f.bank(
        f.account("-300.00", [f.tx(1, "-300.00")]),
        f.account("1000.00", []),
        f.account("-99999.00", [f.tx(2, "-5.00")], currency="USD"),
    )
    vec = build_features(data, None, None, f.request())
    # Consolidated EUR balance is 700 today and 1000 before the debit: never negative.
    assert _v(vec, "bank_negative_balance_days") == 0.0
    assert _v(vec, "bank_outflows_90d") == 300.0


def test_rejected_debits_counted_and_netted() -> None:
    data = f.bank(
        f.account(
            "1000.00",
            [
                f.tx(5, "-400.00", "PRLV URSSAF"),
                f.tx(4, "400.00", "REJET PRLV URSSAF"),
                f.tx(20, "-250.00", "PRLV EDF"),
                f.tx(19, "250.00", "Impayé prlv edf"),
                f.tx(30, "3000.00", "VIR CLIENT"),
                f.tx(100, "80.00", "REJET ancien"),
            ],
        )
    )
    vec = build_features(data, None, None, f.request())
    assert _v(vec, "bank_rejected_debits_90d") == 2.0
    assert _v(vec, "bank_inflows_90d") == 3000.0
    assert _v(vec, "bank_outflows_90d") == 0.0


def test_healthy_bank_signs() -> None:
    vec = build_features(f.healthy_bank(), None, None, f.request("30000"))
    assert _v(vec, "bank_negative_balance_days") == 0.0
    net = _v(vec, "bank_net_flow_ratio_90d")
    assert net is not None
    assert 0.1 < net < 0.3
    cover = _v(vec, "bank_cash_cover_months")
    assert cover is not None
    assert cover > 1.0
    vol = _v(vec, "bank_balance_volatility")
    assert vol is not None
    assert 0.0 < vol < 1.0
    trend = _v(vec, "bank_net_flow_trend")
    assert trend is not None
    assert abs(trend) < 0.05
    monthly = _v(vec, "request_to_monthly_inflows")
    inflows = _v(vec, "bank_inflows_90d")
    assert monthly is not None
    assert inflows is not None
    assert monthly == pytest.approx(30000 / (inflows / 3))


def test_net_flow_trend_sign() -> None:
    # Net flow improves week after week: positive trend; the mirror image is negative.
    improving = [f.tx(7 * w, str(1000 - 60 * w)) for w in range(13)]
    worsening = [f.tx(7 * w, str(1000 - 60 * (12 - w))) for w in range(13)]
    up = build_features(f.bank(f.account("0", improving)), None, None, f.request())
    down = build_features(f.bank(f.account("0", worsening)), None, None, f.request())
    t_up, t_down = _v(up, "bank_net_flow_trend"), _v(down, "bank_net_flow_trend")
    assert t_up is not None
    assert t_down is not None
    assert t_up > 0 > t_down
    assert t_up == pytest.approx(-t_down)


def test_balance_missing_leaves_balance_features_nan() -> None:
    vec = build_features(f.bank(f.account(None, [f.tx(1, "10.00")])), None, None, f.request())
    assert _v(vec, "bank_negative_balance_days") is None
    assert _v(vec, "bank_balance_volatility") is None
    assert _v(vec, "bank_inflows_90d") == 10.0


def test_accounting_ratios() -> None:
    vec = build_features(
        None, f.books(f.statement(), f.statement(2024, revenue="800000")), None, f.request("50000")
    )
    assert _v(vec, "has_books") == 1.0
    assert _v(vec, "working_capital_to_assets") == pytest.approx(150000 / 800000)
    assert _v(vec, "current_ratio") == pytest.approx(400000 / 250000)
    assert _v(vec, "cash_ratio") == pytest.approx(100000 / 250000)
    assert _v(vec, "retained_earnings_to_assets") == pytest.approx(150000 / 800000)
    assert _v(vec, "equity_to_liabilities") == pytest.approx(300000 / 500000)
    assert _v(vec, "ebit_to_assets") == pytest.approx(100000 / 800000)
    assert _v(vec, "ebitda_margin") == pytest.approx(0.12)
    assert _v(vec, "net_margin") == pytest.approx(0.06)
    assert _v(vec, "financial_debt_to_ebitda") == pytest.approx(200000 / 120000)
    assert _v(vec, "debt_ratio") == pytest.approx(500000 / 800000)
    assert _v(vec, "sales_to_assets") == pytest.approx(1.25)
    assert _v(vec, "revenue_growth") == pytest.approx(0.25)
    assert _v(vec, "annual_revenue") == 1_000_000.0
    assert _v(vec, "request_to_revenue") == pytest.approx(0.05)
    assert _v(vec, "request_to_monthly_inflows") is None


def test_accounting_edge_cases() -> None:
    loss = f.books(f.statement(ebitda="-10000"))
    vec = build_features(None, loss, None, f.request())
    assert _v(vec, "financial_debt_to_ebitda") == 50.0
    no_debt = f.books(f.statement(ebitda="-10000", financial_debt="0"))
    assert build_features(None, no_debt, None, f.request()).get("financial_debt_to_ebitda") == 0.0
    one_year = build_features(None, f.books(f.statement()), None, f.request())
    assert one_year.get("revenue_growth") is None
    empty = build_features(None, f.books(), None, f.request())
    assert empty.get("has_books") == 0.0
    assert empty.get("current_ratio") is None


def test_registry_features() -> None:
    vec = build_features(None, None, f.record(), f.request())
    age = _v(vec, "company_age_years")
    assert age is not None
    assert 11.5 < age < 11.8
    assert _v(vec, "legal_form_group") == 2.0
    assert _v(vec, "sector_risk_group") == 1.0
    assert _v(vec, "headcount_band") == 4.0
    assert _v(vec, "registry_active") == 1.0
    assert _v(vec, "collective_proceedings") == 0.0
    assert _v(vec, "days_since_collective") is None

    closed = build_features(None, None, f.record(active=False, naf="43.21A"), f.request())
    assert closed.get("registry_active") == 0.0
    assert closed.get("sector_risk_group") == 4.0

    proc = f.record(announcements=(f.collective(400), f.collective(3000)))
    vec = build_features(None, None, proc, f.request())
    assert _v(vec, "collective_proceedings") == 1.0
    assert _v(vec, "days_since_collective") == 400.0

    old = build_features(None, None, f.record(announcements=(f.collective(3000),)), f.request())
    assert old.get("collective_proceedings") == 0.0
    assert old.get("days_since_collective") == 3000.0

    unknown = f.record(created_on=None, naf=None, legal_form=None, headcount_band=None)
    vec = build_features(None, None, unknown, f.request())
    assert vec.get("company_age_years") is None
    assert vec.get("sector_risk_group") is None


def test_pure_same_input_same_output() -> None:
    args = (f.healthy_bank(), f.books(f.statement()), f.record(), f.request())
    a, b = build_features(*args), build_features(*args)
    assert np.array_equal(a.values, b.values, equal_nan=True)
    with pytest.raises(ValueError, match="read-only"):
        a.values[0] = 1.0


def test_transaction_columns_are_cached_and_not_part_of_equality() -> None:
    acc = f.account("100.00", [f.tx(1, "12.50"), f.tx(3, "-7.25"), f.tx(5, "3.00", status="PDNG")])
    twin = f.account("100.00", list(acc.transactions))
    cols = acc.columns()
    assert acc.columns() is cols
    assert cols.amount.tolist() == [12.5, -7.25, 3.0]
    assert cols.booked.tolist() == [True, True, False]
    assert cols.booking_ordinal.tolist() == [t.booking_date.toordinal() for t in acc.transactions]
    assert not cols.amount.flags.writeable
    assert acc == twin
    assert hash(acc) == hash(twin)
    assert bank_features(f.bank(acc)) == bank_features(f.bank(twin))


def test_bank_features_are_computed_once_per_record() -> None:
    bank = f.healthy_bank()
    first = bank_features(bank)
    assert bank_features(bank) is first  # remembered with the record the cache reuses
    bank.derived.clear()
    assert bank_features(bank) == first  # the memo holds exactly what a fresh pass computes
    overdrawn = f.bank(f.account("-500.00", [f.tx(2, "-900.00")]))
    assert bank_features(overdrawn) != first  # per record, never shared between records
    assert f.bank(*bank.accounts) == bank  # the memo is not part of equality
