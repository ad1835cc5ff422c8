"""The decision core: one prediction with its contributions, the reasons, the policy.

Pure and fast (no I/O): the scoring service calls it for every request and the replay of
a recorded decision calls the very same function, so that a replay can only differ when
the data or the model differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from b2bscore.features.build import FeatureVector
from b2bscore.features.types import CreditRequest
from b2bscore.model.bundle import ModelBundle
from b2bscore.model.policy import PolicyOutcome, decide
from b2bscore.model.reasons import Reason, explain
from b2bscore.model.scorer import Scored, score

MAX_REASONS = 4


@dataclass(frozen=True, slots=True)
class CoreDecision:
    """What the model and the policy made of one feature vector."""

    scored: Scored
    outcome: PolicyOutcome
    reasons: list[Reason]


def decide_on(
    bundle: ModelBundle,
    vector: FeatureVector,
    request: CreditRequest,
    *,
    has_bank: bool,
    has_books: bool,
    has_registry: bool,
) -> CoreDecision:
    """Score, explain and decide; reasons ordered hard rules first, then the model's."""
    scored = score(bundle, vector)
    model_reasons = explain(bundle, scored, vector, limit=MAX_REASONS)
    outcome = decide(
        scored.probability_of_default,
        vector,
        request,
        has_bank=has_bank,
        has_books=has_books,
        has_registry=has_registry,
        thresholds=bundle.policy,
    )
    # The hard rules decided, so they lead; a model reason already named by a rule is not
    # repeated.
    seen = {r.code for r in outcome.rule_reasons}
    reasons = [*outcome.rule_reasons, *(r for r in model_reasons if r.code not in seen)]
    return CoreDecision(scored, outcome, reasons)
