"""Training/serving parity on audited decisions.

For a sample of recorded decisions: decrypt the raw provider payloads kept in the audit
row, parse them with today's adapters, build the features with today's feature code and
score them with the decision's own bundle. Any feature or PD that differs from the record
means the serving code drifted away from what decided (and from what the bundle was
trained on): the report names the decision and the fields.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.crypto import DataKeyring, DecryptionError, KeyringError
from b2bscore.decisions.models import Decision
from b2bscore.decisions.replay import ReplayUnavailable, bundle_for
from b2bscore.decisions.service import open_payloads
from b2bscore.features.build import build_features
from b2bscore.features.types import CreditRequest, Product
from b2bscore.model.bundle import ModelBundle
from b2bscore.model.scorer import score
from b2bscore.sources import accounting, open_banking, registry
from b2bscore.sources.errors import SourceError
from b2bscore.sources.tokens import Tokenizer

_USABLE = frozenset({"ok", "cached"})
# Tokens never reach the features; any key gives the same vector.
_TOKENIZER = Tokenizer(b"b2bscore-parity-tokenization-key")
_REL_TOLERANCE = 1e-12


def _as_of(sources: Mapping[str, Any], name: str, fallback: date) -> date:
    source = sources.get(name)
    raw = source.get("as_of") if isinstance(source, Mapping) else None
    return date.fromisoformat(raw[:10]) if isinstance(raw, str) else fallback


def _parsed(
    payloads: Mapping[str, Any], sources: Mapping[str, Any], name: str, fallback: date
) -> Any:
    source = sources.get(name)
    if not isinstance(source, Mapping) or source.get("status") not in _USABLE:
        return None
    raw = payloads.get(name)
    if not isinstance(raw, Mapping):
        return None
    as_of = _as_of(sources, name, fallback)
    try:
        if name == "open_banking":
            return open_banking.parse_raw(raw, _TOKENIZER, as_of)
        if name == "accounting":
            return accounting.parse_raw(raw, as_of)
        return registry.parse_raw(raw, as_of)
    except SourceError:
        return None


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    fa, fb = float(a), float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return math.isclose(fa, fb, rel_tol=_REL_TOLERANCE, abs_tol=0.0)


def check(decision: Decision, bundle: ModelBundle, keyring: DataKeyring) -> dict[str, Any]:
    """Parity of one decision: the features and PD that differ, or why it was skipped."""
    try:
        payloads = open_payloads(decision, keyring)
    except (DecryptionError, KeyringError) as error:
        return {"decision_id": decision.id, "skipped": f"payload unreadable: {error}"}
    if payloads is None:
        return {"decision_id": decision.id, "skipped": "payload purged by retention"}
    sources = decision.sources if isinstance(decision.sources, Mapping) else {}
    fallback = decision.created_at.date()
    request = CreditRequest(decision.siren, decision.requested_amount, Product(decision.product))
    vector = build_features(
        _parsed(payloads, sources, "open_banking", fallback),
        _parsed(payloads, sources, "accounting", fallback),
        _parsed(payloads, sources, "registry", fallback),
        request,
    )
    rebuilt = vector.as_dict()
    features = {
        name: {"recorded": decision.features.get(name), "rebuilt": value}
        for name, value in rebuilt.items()
        if not _same(decision.features.get(name), value)
    }
    pd = score(bundle, vector).probability_of_default
    recorded_pd = float(decision.probability_of_default)
    digits = len(str(decision.probability_of_default).partition(".")[2]) or 8
    pd_differs = f"{pd:.{digits}f}" != f"{recorded_pd:.{digits}f}"
    out: dict[str, Any] = {"decision_id": decision.id, "model_id": decision.model_id}
    if features:
        out["features"] = features
    if pd_differs:
        out["probability_of_default"] = {"recorded": recorded_pd, "rebuilt": pd}
    return out


async def run(
    session: AsyncSession, keyring: DataKeyring, models_dir: Path, *, sample: int
) -> dict[str, Any]:
    """Parity of the newest ``sample`` decisions; a report with every difference."""
    rows = (
        (await session.execute(select(Decision).order_by(Decision.created_at.desc()).limit(sample)))
        .scalars()
        .all()
    )
    bundles: dict[str, ModelBundle] = {}
    checked = skipped = 0
    differing: list[dict[str, Any]] = []
    skips: list[dict[str, Any]] = []
    for decision in rows:
        try:
            bundle = await bundle_for(decision, bundles, models_dir)
        except ReplayUnavailable as error:
            skipped += 1
            skips.append({"decision_id": decision.id, "skipped": str(error)})
            continue
        result = await asyncio.to_thread(check, decision, bundle, keyring)
        if "skipped" in result:
            skipped += 1
            skips.append(result)
            continue
        checked += 1
        if "features" in result or "probability_of_default" in result:
            differing.append(result)
    return {
        "sample": len(rows),
        "checked": checked,
        "skipped": skipped,
        "identical": checked - len(differing),
        "differing": differing,
        "skips": skips[:20],
    }
