"""Scorer: one pred_contrib call, contributions that add up to the raw margin."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    # shap's plotting colours use a matplotlib call that newer matplotlib flags as
    # pending deprecation at import; the warning is theirs, not ours.
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    import shap

from b2bscore.features.build import FeatureVector
from b2bscore.model.bundle import Calibration, ModelBundle
from b2bscore.model.scorer import score
from tests.model.helpers import random_matrix, small_bundle


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return small_bundle()


def test_contributions_plus_bias_equal_raw_margin(bundle: ModelBundle) -> None:
    x = random_matrix(300, 11)
    raw = bundle.booster.predict(x, raw_score=True, num_threads=1)
    for i in range(len(x)):
        s = score(bundle, FeatureVector(values=x[i]))
        assert s.contributions.shape == (x.shape[1],)
        assert float(s.contributions.sum()) + s.bias == pytest.approx(s.margin, abs=1e-12)
        assert s.margin == pytest.approx(float(raw[i]), abs=1e-6)
        assert s.probability_of_default == pytest.approx(1.0 / (1.0 + math.exp(-s.margin)))


def test_contributions_match_shap_tree_explainer(bundle: ModelBundle) -> None:
    # Handing LightGBM's booster to shap would just call pred_contrib again; re-feeding the
    # parsed trees as a plain ensemble runs shap's own TreeSHAP, an independent check.
    parsed = shap.TreeExplainer(bundle.booster).model.trees
    trees = [
        {
            "children_left": t.children_left,
            "children_right": t.children_right,
            "children_default": t.children_default,
            "features": t.features,
            "thresholds": t.thresholds,
            "values": t.values.reshape(-1, 1),
            "node_sample_weight": t.node_sample_weight,
        }
        for t in parsed
    ]
    explainer = shap.TreeExplainer({"trees": trees, "base_offset": 0.0})
    x = random_matrix(6, 12)
    values = np.asarray(explainer.shap_values(x))
    expected = float(np.asarray(explainer.expected_value).reshape(-1)[0])
    for i in range(len(x)):
        s = score(bundle, FeatureVector(values=x[i]))
        np.testing.assert_allclose(s.contributions, values[i], atol=1e-6)
        assert s.bias == pytest.approx(expected, abs=1e-6)


def test_calibration_methods() -> None:
    platt = Calibration(method="platt", platt_a=2.0, platt_b=-1.0)
    assert platt.pd(0.5) == pytest.approx(0.5)
    margins = np.linspace(-20, 20, 41)
    p = platt.pd_array(margins)
    assert np.all(np.diff(p) >= 0)
    assert p.min() > 0
    assert p.max() < 1
    assert [platt.pd(m) for m in margins] == pytest.approx(list(p), abs=1e-12)
    iso = Calibration(method="isotonic", iso_x=(-1.0, 0.0, 1.0), iso_y=(0.01, 0.05, 0.2))
    assert iso.pd(-5.0) == pytest.approx(0.01)
    assert iso.pd(0.5) == pytest.approx(0.125)
    assert iso.pd(9.0) == pytest.approx(0.2)
    assert Calibration.from_json(iso.to_json()) == iso


def test_fast_path_equals_booster_predict(bundle: ModelBundle) -> None:
    x = random_matrix(500, 21)
    expected = np.asarray(bundle.booster.predict(x, pred_contrib=True, num_threads=1))
    predictor = bundle.contrib_predictor
    assert predictor is bundle.contrib_predictor  # prepared once per bundle
    got = np.stack([predictor.contributions(np.ascontiguousarray(r)) for r in x])
    assert np.array_equal(got, expected)
    # A strided view (a column of a Fortran matrix) is copied, not misread.
    fortran = np.asfortranarray(x[:5])
    assert np.array_equal(predictor.contributions(fortran[0]), expected[0])
    with pytest.raises(ValueError, match="float64 row"):
        predictor.contributions(x[0].astype(np.float32))
    with pytest.raises(ValueError, match="float64 row"):
        predictor.contributions(x[0, :-1].copy())


def test_contributions_add_up_on_realistic_rows(bundle: ModelBundle) -> None:
    from b2bscore.training.dataset import build_dataset

    x, _, _, _ = build_dataset(60, 5, workers=1)
    raw = bundle.booster.predict(x, raw_score=True, num_threads=1)
    for i in range(len(x)):
        s = score(bundle, FeatureVector(values=x[i]))
        assert float(s.contributions.sum()) + s.bias == pytest.approx(float(raw[i]), abs=1e-6)
