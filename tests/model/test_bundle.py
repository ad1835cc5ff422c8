"""Bundle save/load: hashes and the feature catalog are verified."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from b2bscore.features.build import FeatureVector
from b2bscore.model.bundle import (
    BundleError,
    ModelBundle,
    latest_bundle_path,
    load_bundle,
    save_bundle,
)
from b2bscore.model.scorer import score
from tests.model.helpers import random_matrix, small_bundle


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return small_bundle()


@pytest.fixture
def saved(bundle: ModelBundle, tmp_path: Path) -> Path:
    return save_bundle(bundle, tmp_path, "# Model card\n")


def _rewrite_manifest(path: Path, **changes: object) -> None:
    doc = json.loads((path / "bundle.json").read_text())
    doc.update(changes)
    (path / "bundle.json").write_text(json.dumps(doc))


def test_round_trip_scores_identically(bundle: ModelBundle, saved: Path) -> None:
    assert saved.name == bundle.model_id
    assert {p.name for p in saved.iterdir()} == {"model.txt", "bundle.json", "MODEL_CARD.md"}
    loaded = load_bundle(saved)
    assert load_bundle(saved / "bundle.json").model_id == loaded.model_id
    assert loaded.version == bundle.version
    assert loaded.calibration == bundle.calibration
    assert loaded.path == saved
    for row in random_matrix(20, 5):
        a = score(bundle, FeatureVector(values=row))
        b = score(loaded, FeatureVector(values=row))
        assert a.margin == b.margin
        np.testing.assert_array_equal(a.contributions, b.contributions)


def test_tampered_model_refused(saved: Path) -> None:
    model = saved / "model.txt"
    model.write_text(model.read_text().replace("leaf_value=", "leaf_value=0", 1))
    with pytest.raises(BundleError, match=r"sha256 mismatch for model\.txt"):
        load_bundle(saved)


def test_tampered_card_refused(saved: Path) -> None:
    (saved / "MODEL_CARD.md").write_text("# edited\n")
    with pytest.raises(BundleError, match="MODEL_CARD"):
        load_bundle(saved)


def test_missing_file_refused(saved: Path) -> None:
    (saved / "model.txt").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(saved)


def test_feature_list_mismatch_refused(saved: Path) -> None:
    doc = json.loads((saved / "bundle.json").read_text())
    features = doc["features"]
    _rewrite_manifest(saved, features=[*features[1:], features[0]])
    with pytest.raises(BundleError, match="feature list"):
        load_bundle(saved)


def test_catalog_fingerprint_mismatch_refused(saved: Path) -> None:
    _rewrite_manifest(saved, catalog_fingerprint="0" * 64)
    with pytest.raises(BundleError, match="fingerprint"):
        load_bundle(saved)


def test_no_manifest_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        load_bundle(tmp_path)
    with pytest.raises(BundleError):
        latest_bundle_path(tmp_path / "nothing")


def test_latest_bundle_path(bundle: ModelBundle, tmp_path: Path) -> None:
    for model_id, version in (("m-a", "2026.9.0"), ("m-b", "2026.11.0"), ("m-c", "2026.10.2")):
        save_bundle(
            dataclasses.replace(bundle, model_id=model_id, version=version), tmp_path, "card\n"
        )
    assert latest_bundle_path(tmp_path) == tmp_path / "m-b"


def test_save_refuses_an_existing_bundle(bundle: ModelBundle, saved: Path) -> None:
    before = (saved / "model.txt").read_bytes()
    with pytest.raises(BundleError, match="immutable"):
        save_bundle(bundle, saved.parent, "# another card\n")
    assert (saved / "model.txt").read_bytes() == before
    assert load_bundle(saved).model_id == bundle.model_id


def test_addenda_are_verified_and_bound_to_the_manifest(saved: Path) -> None:
    from b2bscore.model.bundle import card_path, write_addenda

    manifest = (saved / "bundle.json").read_bytes()
    write_addenda(saved, {"MODEL_CARD.md": "# regenerated\n"}, "test", "2026-12-04T00:00:00Z")
    assert (saved / "bundle.json").read_bytes() == manifest  # the hashed files never change
    assert card_path(saved).read_text() == "# regenerated\n"
    load_bundle(saved)
    (saved / "addenda" / "MODEL_CARD.md").write_text("# tampered\n")
    with pytest.raises(BundleError, match=r"addenda/MODEL_CARD\.md"):
        load_bundle(saved)
    write_addenda(saved, {"MODEL_CARD.md": "# again\n"}, "test", "2026-12-04T00:00:00Z")
    _rewrite_manifest(saved, metrics={"auc": 0.9})  # a different bundle.json
    with pytest.raises(BundleError, match=r"another bundle\.json"):
        load_bundle(saved)
