"""The shipped bundles keep their hashed files; their addenda add a card and a reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from b2bscore.model.bundle import card_path, load_bundle, sha256_file
from b2bscore.model.registry import catalogue, verify

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = ("b2b-lgbm-2026.11.0", "b2b-lgbm-2026.11.1")
# sha256 of bundle.json as shipped: decisions and replays name these bundles.
SHIPPED_MANIFESTS = {
    "b2b-lgbm-2026.11.0": "f7f13724bcf7bd8f8bb21996913e0ac47a057668d12113b1882c0f285736c950",
    "b2b-lgbm-2026.11.1": "9214fa8bc9fda14e2cd6265e21fecd637dc29d06f3e8a9773beb62c8d9599c26",
}


@pytest.mark.parametrize("model_id", SHIPPED)
def test_shipped_bundle_unchanged_and_carries_its_addenda(model_id: str) -> None:
    root = MODELS / model_id
    assert sha256_file(root / "bundle.json") == SHIPPED_MANIFESTS[model_id]
    files = json.loads((root / "bundle.json").read_text())["files"]
    assert "reference.json" not in files  # the reference came later, as an addendum
    bundle = verify(root)
    assert bundle.manifest_sha256 == SHIPPED_MANIFESTS[model_id]
    assert bundle.reference is not None
    assert bundle.reference.n == 14_400
    assert set(bundle.reference.features) == set(bundle.feature_names)
    card = card_path(root).read_text()
    for section in (
        "## Intended use",
        "## Training data",
        "## Monotone constraints",
        "## Real data",
        "## Limitations",
        "## Reason-code catalogue",
        "RULE_COLLECTIVE_PROCEEDINGS",
        SHIPPED_MANIFESTS[model_id],
    ):
        assert section in card, section


def test_catalogue_lists_both_with_metrics() -> None:
    infos = {i.model_id: i for i in catalogue(MODELS)}
    assert set(SHIPPED) <= set(infos)
    for model_id in SHIPPED:
        auc = infos[model_id].auc
        assert auc is not None
        assert auc > 0.8
        assert infos[model_id].manifest_sha256 == SHIPPED_MANIFESTS[model_id]
    assert load_bundle(MODELS / SHIPPED[1]).version == "2026.11.1"
