"""Reasons: grouped by family, adverse first, labels rendered with the value."""

from __future__ import annotations

import numpy as np
import pytest

from b2bscore.features.build import FeatureVector, build_features
from b2bscore.features.catalog import FEATURE_INDEX, FEATURE_NAMES, FEATURES
from b2bscore.model.reasons import explain
from b2bscore.model.scorer import Scored
from tests.features import factories as f


def _scored(contribs: dict[str, float]) -> Scored:
    c = np.zeros(len(FEATURE_NAMES))
    for name, v in contribs.items():
        c[FEATURE_INDEX[name]] = v
    return Scored(
        margin=float(c.sum()) - 3.0, probability_of_default=0.05, contributions=c, bias=-3.0
    )


def _vector() -> FeatureVector:
    data = f.bank(f.account("100.00", [f.tx(10, "500.00"), f.tx(30, "-600.00")]))
    return build_features(data, f.books(f.statement()), f.record(), f.request())


def test_grouped_by_family_and_ranked() -> None:
    scored = _scored(
        {
            "bank_negative_balance_days": 0.30,  # liquidity
            "current_ratio": 0.25,  # liquidity: family total 0.55
            "financial_debt_to_ebitda": 0.40,  # leverage
            "bank_rejected_debits_90d": 0.05,  # payment incidents
            "company_age_years": -0.50,  # company age, favourable
            "ebitda_margin": -0.10,  # profitability, favourable
        }
    )
    reasons = explain(FEATURES, scored, _vector(), limit=4)
    assert [r.code for r in reasons] == [
        "LIQUIDITY",
        "LEVERAGE",
        "PAYMENT_INCIDENTS",
        "COMPANY_AGE",
    ]
    assert [r.direction for r in reasons] == ["adverse", "adverse", "adverse", "favourable"]
    liq = reasons[0]
    assert liq.contribution == 0.55 or abs(liq.contribution - 0.55) < 1e-12
    assert liq.feature == "bank_negative_balance_days"
    assert liq.value == 20.0
    assert liq.label_fr == "Trésorerie négative sur 20 des 90 derniers jours"
    assert liq.label_en == "Negative balance on 20 of the last 90 days"
    assert reasons[3].feature == "company_age_years"


def test_favourable_fill_room_and_limit() -> None:
    scored = _scored({"company_age_years": -0.5, "ebitda_margin": -0.1, "debt_ratio": 0.2})
    reasons = explain(FEATURES, scored, _vector(), limit=2)
    assert [(r.code, r.direction) for r in reasons] == [
        ("LEVERAGE", "adverse"),
        ("COMPANY_AGE", "favourable"),
    ]
    assert explain(FEATURES, scored, _vector(), limit=0) == []
    assert len(explain(FEATURES, _scored({}), _vector())) == 0


def test_cancelling_features_inside_a_family() -> None:
    scored = _scored({"current_ratio": 0.3, "cash_ratio": -0.3, "debt_ratio": 0.1})
    reasons = explain(FEATURES, scored, _vector())
    assert [r.code for r in reasons] == ["LEVERAGE"]


def test_missing_value_renders_family_label() -> None:
    vec = build_features(None, None, f.record(), f.request())
    scored = _scored({"bank_negative_balance_days": 0.4, "has_bank": 0.1})
    reasons = explain(FEATURES, scored, vec)
    liq = reasons[0]
    assert liq.value is None
    assert "données bancaires indisponibles" in liq.label_fr
    assert "not available" in liq.label_en
    cov = reasons[1]
    assert cov.code == "DATA_COVERAGE"
    assert cov.value == 0.0
    assert cov.as_dict()["label_en"] == "No bank account connected: connect your business account"
    assert "connectez votre compte" in cov.label_fr


def test_reasons_are_exactly_the_contributions_by_family() -> None:
    from b2bscore.model.scorer import score
    from b2bscore.training.dataset import build_dataset
    from tests.model.helpers import small_bundle

    bundle = small_bundle()
    x, _, _, _ = build_dataset(40, 9, workers=1)
    raw = bundle.booster.predict(x, raw_score=True, num_threads=1)
    families = {spec.family for spec in FEATURES}
    for i in range(len(x)):
        vector = FeatureVector(values=x[i])
        scored = score(bundle, vector)
        totals = {
            fam: float(sum(c for c, s in zip(scored.contributions, FEATURES, strict=True)
                           if s.family == fam))
            for fam in families
        }  # fmt: skip
        assert sum(totals.values()) + scored.bias == pytest.approx(float(raw[i]), abs=1e-6)
        reasons = explain(bundle, scored, vector, limit=len(families))
        for r in reasons:
            assert r.contribution == pytest.approx(totals[r.family], abs=1e-12)
            assert (r.direction == "adverse") == (r.contribution > 0)
        adverse = [r.contribution for r in reasons if r.direction == "adverse"]
        favourable = [r.contribution for r in reasons if r.direction == "favourable"]
        assert adverse == sorted(adverse, reverse=True)
        assert favourable == sorted(favourable)
        assert [r.direction for r in reasons] == ["adverse"] * len(adverse) + ["favourable"] * len(
            favourable
        )
        assert len({r.family for r in reasons}) == len(reasons)
        assert {r.family for r in reasons} == {f for f, v in totals.items() if abs(v) > 1e-6}
