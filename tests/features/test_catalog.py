"""Catalog consistency."""

from __future__ import annotations

import math
import re

from b2bscore.features import catalog
from b2bscore.features.catalog import FAMILY_LABELS, FEATURE_NAMES, FEATURES


def test_names_unique_and_ordered() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert tuple(s.name for s in FEATURES) == FEATURE_NAMES


def test_every_family_has_labels_and_one_code() -> None:
    codes: dict[str, set[str]] = {}
    for spec in FEATURES:
        assert spec.family in FAMILY_LABELS
        fr, en = FAMILY_LABELS[spec.family]
        assert fr
        assert en
        codes.setdefault(spec.family, set()).add(spec.reason_code)
    assert all(len(c) == 1 for c in codes.values())
    assert len({next(iter(c)) for c in codes.values()}) == len(codes)


def test_monotone_values_and_labels_render() -> None:
    for spec in FEATURES:
        assert spec.monotone in (-1, 0, 1)
        assert spec.unit
        assert spec.description
        for value in (0.0, 1.5, -2.0, 1234.5):
            fr, en = spec.render(value)
            assert fr
            assert en
            assert "{" not in fr
            assert "{" not in en
        fr, en = spec.render(None)
        if spec.missing_labels is None:
            assert "indisponible" in fr
            assert "not available" in en
        assert not math.isnan(float(spec.monotone))


def test_fingerprint_stable_and_sensitive() -> None:
    fp = catalog.catalog_fingerprint()
    assert len(fp) == 64
    assert fp == catalog.catalog_fingerprint()
    assert "bank_negative_balance_days" in FEATURE_NAMES


# Typical values of every feature, as a company of the synthetic world has them.
TYPICAL: dict[str, float] = {
    "bank_inflows_90d": 184523.4, "bank_outflows_90d": 171220.0,
    "bank_net_flow_ratio_90d": 0.072, "bank_net_flow_trend": -0.031,
    "bank_negative_balance_days": 23.0, "bank_balance_volatility": 1.84,
    "bank_cash_cover_months": 2.35, "bank_rejected_debits_90d": 2.0,
    "bank_history_months": 3.9, "working_capital_to_assets": 0.18, "current_ratio": 1.42,
    "cash_ratio": 0.35, "retained_earnings_to_assets": 0.21, "equity_to_liabilities": 0.54,
    "ebit_to_assets": 0.064, "ebitda_margin": 0.093, "net_margin": 0.031,
    "financial_debt_to_ebitda": 3.2, "debt_ratio": 0.65, "sales_to_assets": 1.7,
    "revenue_growth": -0.12, "annual_revenue": 1250000.0, "company_age_years": 7.4,
    "legal_form_group": 2.0, "headcount_band": 4.0, "sector_risk_group": 3.0,
    "registry_active": 0.0, "collective_proceedings": 1.0, "days_since_collective": 40.0,
    "request_to_revenue": 0.04, "request_to_monthly_inflows": 0.8,
    "log_requested_amount": math.log1p(50000.0), "has_bank": 0.0, "has_books": 1.0,
}  # fmt: skip


def test_every_label_reads_well_for_typical_values() -> None:
    assert set(TYPICAL) == set(FEATURE_NAMES)
    for spec in FEATURES:
        fr, en = spec.render(TYPICAL[spec.name])
        for text in (fr, en):
            assert "{" not in text
            assert not re.search(r"\bnan\b|\binf\b", text.lower())
            assert "(1 = " not in text  # flags read as words, not as 0/1 codes
        assert not re.search(r"\d\.\d", fr), fr  # French decimal comma
        assert not re.search(r"\d%", fr), fr  # French "12 %"
    by_name = {s.name: s for s in FEATURES}
    assert by_name["bank_negative_balance_days"].render(23.0) == (
        "Trésorerie négative sur 23 des 90 derniers jours",
        "Negative balance on 23 of the last 90 days",
    )
    assert by_name["annual_revenue"].render(1250000.0) == (
        "Chiffre d'affaires annuel de 1\u202f250\u202f000 €",
        "Annual revenue of EUR 1,250,000",
    )
    assert by_name["log_requested_amount"].render(math.log1p(50000.0))[1] == (
        "Requested amount of EUR 50,000"
    )
    assert by_name["bank_net_flow_trend"].render(-0.031)[0] == (
        "Tendance du flux net hebdomadaire : -3,1\u202f% des encaissements par semaine"
    )
    for flag in ("registry_active", "collective_proceedings", "has_bank", "has_books"):
        zero, one = by_name[flag].render(0.0), by_name[flag].render(1.0)
        assert zero != one
        assert "0" not in zero[0] + one[0]


def test_missing_values_say_what_to_do() -> None:
    for spec in FEATURES:
        for missing in (None, math.nan):
            fr, en = spec.render(missing)
            assert fr
            assert en
            assert "{" not in fr + en
    by_name = {s.name: s for s in FEATURES}
    fr, en = by_name["bank_negative_balance_days"].render(None)
    assert fr.startswith("Liquidité et trésorerie : ")
    assert "connectez votre compte professionnel" in fr
    assert "connect your business account" in en
    fr, en = by_name["current_ratio"].render(None)
    assert "balance ou votre FEC" in fr
    assert "trial balance" in en
    # No proceedings is not missing data.
    assert by_name["days_since_collective"].render(None) == (
        "Aucune procédure collective publiée au BODACC",
        "No collective proceedings published in BODACC",
    )
