"""Replay: recompute a recorded decision from its stored features with its stored model.

The audit row keeps the feature vector, the request and the per-source statuses, so the
decision core (score, reasons, policy) can be run again, offline, with the bundle that
decided. Any difference between what was recorded and what the model says now means the
row, the bundle or the code changed since: it is reported field by field.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import numpy as np

from b2bscore.decisions.models import Decision
from b2bscore.features.build import FeatureVector
from b2bscore.features.catalog import FEATURE_NAMES
from b2bscore.features.types import CreditRequest, Product
from b2bscore.model.bundle import BundleError, ModelBundle, load_bundle
from b2bscore.model.core import decide_on

# How many reasons the scoring service records; replay must cut the list at the same place.
# Statuses under which the scoring service had the source's data (SourceResult.usable).
_USABLE: Final = frozenset({"ok", "cached"})
# Rounding of reason contributions in the stored row (see scoring.service._reason_json).
_CONTRIBUTION_DIGITS: Final = 6
# A model id names a directory under models_dir: never a path.
_MODEL_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ReplayUnavailable(Exception):
    """The decision cannot be replayed: its model bundle or stored inputs are unusable."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One output whose recorded value differs from the replayed one."""

    field: str
    recorded: Any
    replayed: Any


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Outcome of a replay: identical or not, and every difference."""

    decision_id: str
    model_id: str
    model_version: str
    differences: list[Difference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True when every replayed output equals the recorded one."""
        return not self.differences


def vector_from_features(stored: Mapping[str, Any]) -> FeatureVector:
    """The feature vector of a stored features dict, in catalog order (None -> NaN)."""
    values = np.empty(len(FEATURE_NAMES), dtype=np.float64)
    for i, name in enumerate(FEATURE_NAMES):
        raw = stored.get(name)
        if raw is None:
            values[i] = math.nan
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ReplayUnavailable(f"stored feature {name} is not a number")
        try:
            values[i] = float(raw)
        except ValueError:
            raise ReplayUnavailable(f"stored feature {name} is not a number") from None
    values.flags.writeable = False
    return FeatureVector(values=values)


def _request_of(decision: Decision) -> CreditRequest:
    try:
        product = Product(decision.product)
    except ValueError:
        raise ReplayUnavailable(f"unknown product {decision.product!r}") from None
    return CreditRequest(decision.siren, decision.requested_amount, product)


def _usable(sources: Mapping[str, Any], name: str) -> bool:
    source = sources.get(name)
    return isinstance(source, Mapping) and source.get("status") in _USABLE


def _pd_at_precision(recorded: str, replayed: float) -> str:
    # The service stores the PD as a fixed-point string; compare at that many decimals.
    _, _, decimals = recorded.partition(".")
    if "e" in recorded.lower() or not decimals:
        return repr(replayed)
    return f"{replayed:.{len(decimals)}f}"


def _money(value: Any) -> str:
    try:
        return str(Decimal(str(value)).quantize(Decimal("0.01")))
    except InvalidOperation:
        return str(value)


def _reason_pairs(reasons: Sequence[Any]) -> list[tuple[Any, Any]]:
    pairs: list[tuple[Any, Any]] = []
    for reason in reasons:
        if isinstance(reason, Mapping):
            contribution = reason.get("contribution")
            if isinstance(contribution, int | float) and not isinstance(contribution, bool):
                contribution = round(float(contribution), _CONTRIBUTION_DIGITS)
            pairs.append((reason.get("code"), contribution))
        else:
            pairs.append((None, None))
    return pairs


def replay_decision(decision: Decision, bundle: ModelBundle) -> ReplayResult:
    """Recompute score, PD, grade, decision, limit and reasons; list every difference."""
    if (bundle.model_id, bundle.version) != (decision.model_id, decision.model_version):
        raise ReplayUnavailable("the bundle is not the one that decided")
    vector = vector_from_features(decision.features)
    request = _request_of(decision)
    sources = decision.sources if isinstance(decision.sources, Mapping) else {}
    core = decide_on(
        bundle,
        vector,
        request,
        has_bank=_usable(sources, "open_banking"),
        has_books=_usable(sources, "accounting"),
        has_registry=_usable(sources, "registry"),
    )
    scored, outcome, reasons = core.scored, core.outcome, core.reasons

    recorded_pd = str(decision.probability_of_default)
    comparisons: list[tuple[str, Any, Any]] = [
        (
            "probability_of_default",
            recorded_pd,
            _pd_at_precision(recorded_pd, scored.probability_of_default),
        ),
        ("score", decision.score, outcome.score),
        ("grade", decision.grade, outcome.grade),
        ("decision", decision.decision, outcome.decision),
        ("proposed_limit", _money(decision.proposed_limit), _money(outcome.proposed_limit)),
    ]
    recorded_reasons = _reason_pairs(decision.reasons if isinstance(decision.reasons, list) else [])
    replayed_reasons = [(r.code, round(r.contribution, _CONTRIBUTION_DIGITS)) for r in reasons]
    differences = [Difference(name, a, b) for name, a, b in comparisons if a != b]
    if recorded_reasons != replayed_reasons:
        differences.append(
            Difference(
                "reasons",
                [{"code": c, "contribution": v} for c, v in recorded_reasons],
                [{"code": c, "contribution": v} for c, v in replayed_reasons],
            )
        )
    return ReplayResult(
        decision_id=decision.id,
        model_id=decision.model_id,
        model_version=decision.model_version,
        differences=differences,
    )


async def bundle_for(
    decision: Decision, bundles: MutableMapping[str, ModelBundle], models_dir: Path
) -> ModelBundle:
    """The bundle that decided, from the cache or loaded (and verified) from models_dir."""
    model_id = decision.model_id
    bundle = bundles.get(model_id)
    if bundle is None:
        if not _MODEL_ID.fullmatch(model_id):
            raise ReplayUnavailable("the recorded model id is not a bundle name")
        path = models_dir / model_id
        if not path.is_dir():
            raise ReplayUnavailable(f"model {model_id} is no longer available")
        try:
            # Parsing a LightGBM model takes milliseconds: keep it off the event loop.
            bundle = await asyncio.to_thread(load_bundle, path)
        except BundleError as error:
            raise ReplayUnavailable(f"model {model_id} does not verify: {error}") from error
        bundles[model_id] = bundle
    if bundle.version != decision.model_version:
        raise ReplayUnavailable(
            f"model {model_id} is at version {bundle.version}, "
            f"the decision was made by {decision.model_version}"
        )
    return bundle
