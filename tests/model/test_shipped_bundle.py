"""The bundle shipped under models/ loads against the current catalog and scores sanely."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from b2bscore.features.build import build_features
from b2bscore.features.types import CreditRequest, Product
from b2bscore.model.bundle import latest_bundle_path, load_bundle
from b2bscore.model.policy import decide
from b2bscore.model.scorer import score
from b2bscore.training import world
from b2bscore.training.dataset import company_features, parse_company

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_shipped_bundle_loads_and_ranks_scenarios() -> None:
    bundle = load_bundle(latest_bundle_path(MODELS))
    assert bundle.metrics["test"]["auc"] > 0.75
    pds = {}
    for name in ("healthy", "cash_strapped", "collective_proceedings"):
        siren = world.SCENARIOS[name]
        vector, _ = company_features(siren, 0)
        pds[name] = score(bundle, vector).probability_of_default
    assert pds["healthy"] < 0.03 < pds["cash_strapped"] < pds["collective_proceedings"]


def test_shipped_bundle_decisions_on_scenarios() -> None:
    bundle = load_bundle(latest_bundle_path(MODELS))
    expected = {
        "healthy": "approve",
        "closed_company": "decline",
        "collective_proceedings": "decline",
        "thin_file_startup": "review",
    }
    for name, decision in expected.items():
        siren = world.SCENARIOS[name]
        bank, books, record = parse_company(world.company(siren))
        request = CreditRequest(siren, Decimal("60000"), Product.CREDIT_LINE)
        vector = build_features(bank, books, record, request)
        scored = score(bundle, vector)
        outcome = decide(
            scored.probability_of_default,
            vector,
            request,
            has_bank=bank is not None,
            has_books=books is not None,
            has_registry=record is not None,
            thresholds=bundle.policy,
        )
        assert outcome.decision == decision, name
        if decision == "decline":
            assert outcome.rule_reasons
            assert outcome.proposed_limit == 0
