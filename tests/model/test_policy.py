"""Credit policy: hard rules, thresholds, score scaling and the proposed limit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from b2bscore.features.build import FeatureVector, build_features
from b2bscore.features.types import CreditRequest, Product
from b2bscore.model.policy import (
    DEFAULT_THRESHOLDS,
    PolicyOutcome,
    decide,
    grade_of,
    score_points,
)
from tests.features import factories as f


def _decide(
    pd: float,
    vec: FeatureVector,
    req: CreditRequest,
    *,
    has_bank: bool = True,
    has_registry: bool = True,
    thresholds: dict[str, object] | None = None,
) -> PolicyOutcome:
    return decide(
        pd,
        vec,
        req,
        has_bank=has_bank,
        has_books=True,
        has_registry=has_registry,
        thresholds=thresholds if thresholds is not None else DEFAULT_THRESHOLDS,
    )


def _full(req: CreditRequest | None = None, **record_kw: object) -> FeatureVector:
    return build_features(
        f.healthy_bank(),
        f.books(f.statement()),
        f.record(**record_kw),  # type: ignore[arg-type]
        req or f.request(),
    )


def test_score_scaling_and_grades() -> None:
    assert score_points(1 / 51) == 600  # odds 50:1
    assert score_points(1 / 101) == 650  # odds doubled: +50 points
    assert score_points(1e-12) == 1000
    assert score_points(1 - 1e-12) == 0
    pds = [0.001, 0.01, 0.03, 0.05, 0.1, 0.2, 0.5]
    scores = [score_points(p) for p in pds]
    assert scores == sorted(scores, reverse=True)
    assert [grade_of(p) for p in (0.005, 0.02, 0.05, 0.1, 0.3)] == ["A", "B", "C", "D", "E"]


def test_pd_thresholds() -> None:
    req = f.request("20000")
    vec = _full(req)
    assert _decide(0.01, vec, req).decision == "approve"
    review = _decide(0.05, vec, req)
    assert review.decision == "review"
    assert [r.code for r in review.rule_reasons] == ["RULE_PD_REVIEW_BAND"]
    decline = _decide(0.2, vec, req)
    assert decline.decision == "decline"
    assert decline.proposed_limit == 0
    assert decline.rule_reasons
    assert decline.rule_reasons[0].direction == "adverse"
    assert decline.rule_reasons[0].code == "RULE_PD_ABOVE_DECLINE"
    custom = {**DEFAULT_THRESHOLDS, "approve_max_pd": 0.06}
    assert _decide(0.05, vec, req, thresholds=custom).decision == "approve"


def test_closed_company_declined() -> None:
    vec = _full(active=False)
    out = _decide(0.001, vec, f.request())
    assert out.decision == "decline"
    assert out.rule_reasons[0].code == "RULE_CLOSED"
    assert out.rule_reasons[0].label_en
    assert out.rule_reasons[0].label_fr
    assert out.proposed_limit == Decimal(0)


def test_collective_proceedings_declined() -> None:
    vec = _full(announcements=(f.collective(100),))
    out = _decide(0.001, vec, f.request())
    assert out.decision == "decline"
    assert [r.code for r in out.rule_reasons] == ["RULE_COLLECTIVE_PROCEEDINGS"]
    assert "100" in out.rule_reasons[0].label_fr


def test_missing_sources_review() -> None:
    req = f.request()
    no_bank = build_features(None, f.books(f.statement()), f.record(), req)
    out = _decide(0.001, no_bank, req, has_bank=False)
    assert out.decision == "review"
    assert [r.code for r in out.rule_reasons] == ["RULE_NO_BANK_DATA"]
    assert out.proposed_limit > 0  # capacity from revenue still gives an indicative limit
    no_reg = build_features(f.healthy_bank(), f.books(f.statement()), None, req)
    out = _decide(0.001, no_reg, req, has_registry=False)
    assert out.decision == "review"
    assert [r.code for r in out.rule_reasons] == ["RULE_NO_REGISTRY_DATA"]


def test_no_capacity_review() -> None:
    req = f.request()
    vec = build_features(f.bank(f.account("10.00", [])), None, f.record(), req)
    out = _decide(0.001, vec, req)
    assert out.decision == "review"
    assert out.proposed_limit == 0
    assert [r.code for r in out.rule_reasons] == ["RULE_NO_CAPACITY"]


def test_fraud_young_company_large_amount_fresh_bank() -> None:
    young = f.AS_OF.replace(year=f.AS_OF.year - 1, month=12)
    fresh = f.bank(f.account("5000.00", [f.tx(d, "3000.00") for d in range(0, 20, 5)]))
    big = f.request("60000")
    vec = build_features(fresh, None, f.record(created_on=young), big)
    out = _decide(0.001, vec, big)
    assert out.decision == "review"
    assert "RULE_FRAUD_YOUNG_LARGE_AMOUNT" in [r.code for r in out.rule_reasons]
    # Same company asking little relative to its inflows: no fraud signal.
    small = f.request("1000")
    vec = build_features(fresh, None, f.record(created_on=young), small)
    assert _decide(0.001, vec, small).decision == "approve"
    # Long bank history: no fraud signal either.
    vec = build_features(f.healthy_bank(), None, f.record(created_on=young), big)
    codes = [r.code for r in _decide(0.001, vec, big).rule_reasons]
    assert "RULE_FRAUD_YOUNG_LARGE_AMOUNT" not in codes


@pytest.mark.parametrize("product", list(Product))
def test_limit_decimal_quantized_capped_monotone(product: Product) -> None:
    req = f.request("1000000", product)
    vec = _full(req)
    limits = [_decide(pd, vec, req).proposed_limit for pd in (0.0001, 0.01, 0.02, 0.05, 0.1)]
    for lim in limits:
        assert isinstance(lim, Decimal)
        assert lim >= 0
        assert lim % 100 == 0
        assert lim <= req.requested_amount
        cap = Decimal(DEFAULT_THRESHOLDS["products"][product.value]["cap_eur"])
        assert lim <= cap
    assert limits == sorted(limits, reverse=True)
    assert limits[0] > limits[-1]


def test_limit_never_above_request() -> None:
    req = f.request("1234.56", Product.TERM_LOAN)
    out = _decide(0.001, _full(req), req)
    assert out.proposed_limit == Decimal("1200")
    assert out.decision == "approve"


def test_product_caps_order() -> None:
    req_bnpl = f.request("1000000", Product.BNPL)
    req_term = f.request("1000000", Product.TERM_LOAN)
    bnpl = _decide(0.001, _full(req_bnpl), req_bnpl).proposed_limit
    term = _decide(0.001, _full(req_term), req_term).proposed_limit
    assert bnpl < term
