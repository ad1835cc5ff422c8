"""Credit policy: PD + hard rules -> score, grade, decision and proposed limit.

Score scaling (the usual scorecard "points to double the odds"): with good:bad odds
``odds = (1 - PD) / PD``,

    score = base_points + pdo / ln 2 * ln(odds / base_odds)

with 600 points at odds 50:1 and 50 points to double the odds by default, rounded and
clipped to 0-1000 (higher is safer). PD 1 % -> 649, 3 % -> 569, 15 % -> 443.

Grades follow the PD bands in ``grade_bounds`` (A < 1 %, B < 3 %, C < 7 %, D < 15 %, E).
Score and grade depend on the PD only; hard rules act on the decision.

Decision: approve below ``approve_max_pd``, decline at or above ``decline_min_pd``,
review in between. Hard rules then apply: a closed company or collective proceedings
decline; missing bank or registry data, a very young company asking a large amount with
a freshly connected bank, or no computable capacity turn an approval into a review.

Proposed limit (Decimal EUR): capacity is the smaller of a product-specific share of
annual revenue and a product-specific multiple of average monthly inflows (whichever of
the two is known), scaled down linearly with the PD to zero at ``decline_min_pd``, capped
by the product cap and by the requested amount, rounded DOWN to 100 EUR, never negative.
So ``0 <= proposed_limit <= requested_amount``; an approval means "approved up to the
proposed limit". A decline proposes 0. A review still carries the indicative limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal

from b2bscore.features.build import FeatureVector
from b2bscore.features.types import CreditRequest, Product
from b2bscore.model.reasons import Reason

Decision = Literal["approve", "review", "decline"]
Grade = Literal["A", "B", "C", "D", "E"]
GRADES: tuple[Grade, ...] = ("A", "B", "C", "D", "E")

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "approve_max_pd": 0.03,
    "decline_min_pd": 0.15,
    "grade_bounds": [0.01, 0.03, 0.07, 0.15],
    "score_base_points": 600.0,
    "score_base_odds": 50.0,
    "score_pdo": 50.0,
    # Fraud pattern: brand-new company, bank connected for the occasion, big ticket.
    "young_company_years": 1.0,
    "fresh_bank_history_days": 30.0,
    "large_amount_to_revenue": 0.2,
    "large_amount_to_monthly_inflows": 3.0,
    "large_amount_eur": "50000",
    "limit_quantum_eur": "100",
    "products": {
        "bnpl": {"revenue_share": "0.03", "inflow_multiple": "0.5", "cap_eur": "25000"},
        "invoice_financing": {
            "revenue_share": "0.15",
            "inflow_multiple": "1.5",
            "cap_eur": "250000",
        },
        "credit_line": {"revenue_share": "0.10", "inflow_multiple": "1.0", "cap_eur": "150000"},
        "term_loan": {"revenue_share": "0.25", "inflow_multiple": "3.0", "cap_eur": "500000"},
    },
}
# Every hard-rule reason code the policy can give, for the model card and the docs.
RULE_CATALOGUE: dict[str, str] = {
    "RULE_CLOSED": "decline: the company is closed in the Sirene register",
    "RULE_COLLECTIVE_PROCEEDINGS": "decline: collective proceedings published in BODACC",
    "RULE_PD_ABOVE_DECLINE": "decline: probability of default at or above the decline threshold",
    "RULE_NO_BANK_DATA": "review: no bank data to check the cash flows",
    "RULE_NO_REGISTRY_DATA": "review: the company register record is unavailable",
    "RULE_FRAUD_YOUNG_LARGE_AMOUNT": "review: young company, fresh bank account, large amount",
    "RULE_PD_REVIEW_BAND": "review: probability of default in the manual review band",
    "RULE_NO_CAPACITY": "review: repayment capacity cannot be measured (no inflows, no revenue)",
}
_DAYS_PER_MONTH = 30.4375
_ZERO = Decimal(0)


@dataclass(frozen=True)
class PolicyOutcome:
    """What the policy decided, with the hard rules that fired."""

    score: int
    grade: Grade
    decision: Decision
    proposed_limit: Decimal
    rule_reasons: list[Reason] = field(default_factory=list)


def merged_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with a bundle's policy (products merged per product)."""
    out = dict(DEFAULT_THRESHOLDS)
    if thresholds:
        out.update({k: v for k, v in thresholds.items() if k != "products"})
        products = dict(DEFAULT_THRESHOLDS["products"])
        for name, params in dict(thresholds.get("products") or {}).items():
            products[name] = {**products.get(name, {}), **params}
        out["products"] = products
    return out


def score_points(pd: float, thresholds: Mapping[str, Any] | None = None) -> int:
    """0-1000 score of a PD (higher is safer); see the module docstring."""
    return _score_points(pd, merged_thresholds(thresholds))


def _score_points(pd: float, t: Mapping[str, Any]) -> int:
    p = min(max(pd, 1e-9), 1.0 - 1e-9)
    factor = float(t["score_pdo"]) / math.log(2.0)
    raw = float(t["score_base_points"]) + factor * math.log(
        (1.0 - p) / p / float(t["score_base_odds"])
    )
    return int(min(max(round(raw), 0), 1000))


def grade_of(pd: float, thresholds: Mapping[str, Any] | None = None) -> Grade:
    """Grade A (safest) .. E of a PD."""
    return _grade_of(pd, merged_thresholds(thresholds))


def _grade_of(pd: float, t: Mapping[str, Any]) -> Grade:
    bounds = [float(b) for b in t["grade_bounds"]]
    for grade, bound in zip(GRADES, bounds, strict=False):
        if pd < bound:
            return grade
    return "E"


def _rule(code: str, feature: str, value: float | None, fr: str, en: str) -> Reason:
    return Reason(
        code=code,
        family="policy",
        direction="adverse",
        contribution=0.0,
        feature=feature,
        value=value,
        label_fr=fr,
        label_en=en,
    )


def _dec(x: float) -> Decimal:
    return Decimal(repr(round(x, 6)))


def proposed_limit(
    probability_of_default: float,
    vector: FeatureVector,
    request: CreditRequest,
    thresholds: Mapping[str, Any] | None = None,
) -> Decimal:
    """Limit from capacity, scaled by PD, capped by product and request, down to 100 EUR."""
    return _proposed_limit(probability_of_default, vector, request, merged_thresholds(thresholds))


def _proposed_limit(
    probability_of_default: float,
    vector: FeatureVector,
    request: CreditRequest,
    t: Mapping[str, Any],
) -> Decimal:
    product = t["products"].get(str(request.product)) or t["products"][Product.CREDIT_LINE]
    capacities: list[Decimal] = []
    revenue = vector.get("annual_revenue")
    if revenue is not None and revenue > 0.0:
        capacities.append(Decimal(str(product["revenue_share"])) * _dec(revenue))
    inflows = vector.get("bank_inflows_90d")
    if inflows is not None and inflows > 0.0:
        monthly = _dec(inflows) / Decimal(3)
        capacities.append(Decimal(str(product["inflow_multiple"])) * monthly)
    if not capacities:
        return _ZERO
    decline_pd = float(t["decline_min_pd"])
    risk_factor = min(max((decline_pd - probability_of_default) / decline_pd, 0.0), 1.0)
    limit = min(
        min(capacities) * _dec(risk_factor),
        Decimal(str(product["cap_eur"])),
        request.requested_amount,
    )
    quantum = Decimal(str(t["limit_quantum_eur"]))
    steps = (limit / quantum).to_integral_value(rounding=ROUND_DOWN)
    return max(steps * quantum, _ZERO).quantize(Decimal("1"))


def _fraud_young_large(vector: FeatureVector, request: CreditRequest, t: Mapping[str, Any]) -> bool:
    age = vector.get("company_age_years")
    history = vector.get("bank_history_months")
    if age is None or history is None:
        return False
    if age >= float(t["young_company_years"]):
        return False
    if history * _DAYS_PER_MONTH >= float(t["fresh_bank_history_days"]):
        return False
    amount = request.requested_amount
    if amount > Decimal(str(t["large_amount_eur"])):
        return True
    revenue = vector.get("annual_revenue")
    if revenue is not None and float(amount) > float(t["large_amount_to_revenue"]) * revenue:
        return True
    inflows = vector.get("bank_inflows_90d")
    if inflows is not None:
        monthly = inflows / 3.0
        if float(amount) > float(t["large_amount_to_monthly_inflows"]) * monthly:
            return True
    return False


def decide(
    probability_of_default: float,
    vector: FeatureVector,
    request: CreditRequest,
    *,
    has_bank: bool,
    has_books: bool,
    has_registry: bool,
    thresholds: Mapping[str, Any],
) -> PolicyOutcome:
    """Apply PD thresholds and hard rules; every decline carries an adverse rule reason."""
    del has_books  # missing books are priced by the model, not a hard rule
    t = merged_thresholds(thresholds)
    pd = float(probability_of_default)
    approve_max = float(t["approve_max_pd"])
    decline_min = float(t["decline_min_pd"])
    declines: list[Reason] = []
    reviews: list[Reason] = []

    if vector.get("registry_active") == 0.0:
        declines.append(
            _rule(
                "RULE_CLOSED",
                "registry_active",
                0.0,
                "L'entreprise est fermée (cessée au répertoire Sirene)",
                "The company is closed (ceased in the Sirene register)",
            )
        )
    if vector.get("collective_proceedings") == 1.0:
        days = vector.get("days_since_collective")
        declines.append(
            _rule(
                "RULE_COLLECTIVE_PROCEEDINGS",
                "collective_proceedings",
                1.0,
                f"Procédure collective publiée au BODACC il y a {days or 0:.0f} jours",
                f"Collective proceedings published in BODACC {days or 0:.0f} days ago",
            )
        )
    if pd >= decline_min:
        declines.append(
            _rule(
                "RULE_PD_ABOVE_DECLINE",
                "probability_of_default",
                pd,
                f"Probabilité de défaut estimée ({pd:.1%}) au-delà du seuil de {decline_min:.0%}",
                f"Estimated probability of default ({pd:.1%}) above the {decline_min:.0%} limit",
            )
        )

    if not has_bank:
        reviews.append(
            _rule(
                "RULE_NO_BANK_DATA",
                "has_bank",
                0.0,
                "Aucune donnée bancaire disponible : connectez votre compte professionnel",
                "No bank data available: connect your business account",
            )
        )
    if not has_registry:
        reviews.append(
            _rule(
                "RULE_NO_REGISTRY_DATA",
                "company_age_years",
                None,
                "Fiche du répertoire Sirene indisponible",
                "Company register record unavailable",
            )
        )
    if _fraud_young_large(vector, request, t):
        reviews.append(
            _rule(
                "RULE_FRAUD_YOUNG_LARGE_AMOUNT",
                "company_age_years",
                vector.get("company_age_years"),
                "Entreprise de moins d'un an, compte bancaire tout juste connecté et montant "
                "élevé : vérification manuelle",
                "Company under one year old, bank account just connected and a large amount: "
                "manual check",
            )
        )
    if approve_max <= pd < decline_min and not declines:
        reviews.append(
            _rule(
                "RULE_PD_REVIEW_BAND",
                "probability_of_default",
                pd,
                f"Probabilité de défaut estimée ({pd:.1%}) dans la zone d'examen manuel",
                f"Estimated probability of default ({pd:.1%}) in the manual review band",
            )
        )

    limit = _ZERO if declines else _proposed_limit(pd, vector, request, t)
    if not declines and not reviews and limit <= _ZERO:
        reviews.append(
            _rule(
                "RULE_NO_CAPACITY",
                "bank_inflows_90d",
                vector.get("bank_inflows_90d"),
                "Capacité de remboursement non mesurable (ni encaissements ni chiffre d'affaires)",
                "Repayment capacity cannot be measured (no inflows and no revenue)",
            )
        )

    decision: Decision = "decline" if declines else ("review" if reviews else "approve")
    return PolicyOutcome(
        score=_score_points(pd, t),
        grade=_grade_of(pd, t),
        decision=decision,
        proposed_limit=limit,
        rule_reasons=declines + reviews,
    )
