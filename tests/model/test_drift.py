"""PSI against hand-computed values; binning at the edges; references round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from b2bscore.model.drift import (
    PSI_FLOOR,
    Binned,
    Reference,
    bin_counts,
    build_reference,
    drift_report,
    fit_bins,
    psi,
)


def test_psi_of_identical_distributions_is_zero() -> None:
    assert psi([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]) == 0.0


def test_psi_hand_computed() -> None:
    # (0.3-0.5) ln(0.3/0.5) + (0.7-0.5) ln(0.7/0.5)
    #   = (-0.2)(-0.5108256) + (0.2)(0.3364722) = 0.1021651 + 0.0672944 = 0.1694596
    assert psi([0.5, 0.5], [0.3, 0.7]) == pytest.approx(0.1694596, abs=1e-7)
    # Three bins: 0.1 ln(2) + (-0.1) ln(0.75) + 0 = 0.0693147 + 0.0287682 = 0.0980829
    assert psi([0.1, 0.4, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0980829, abs=1e-7)


def test_psi_floors_empty_bins() -> None:
    # expected 0 -> floored at 1e-4: (0.5 - 1e-4) ln(0.5 / 1e-4) + (0.5 - 1) ln(0.5 / 1)
    expected = (0.5 - PSI_FLOOR) * math.log(0.5 / PSI_FLOOR) + (-0.5) * math.log(0.5)
    assert psi([0.0, 1.0], [0.5, 0.5]) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi([0.0, 1.0], [1.0, 0.0]))


def test_bin_counts_missing_first_and_edges_close_their_bin() -> None:
    values = np.array([np.nan, 0.0, 1.0, 1.5, 2.0, 9.0, np.nan])
    # bins: missing, (-inf, 1], (1, 2], (2, inf)
    assert bin_counts(values, (1.0, 2.0)).tolist() == [2.0, 2.0, 2.0, 1.0]


def test_binned_psi_matches_hand_computation() -> None:
    binned = Binned(edges=(1.0,), expected=(0.0, 0.5, 0.5))
    # actual: missing 0, <=1: 3/10, >1: 7/10 -> same as the two-bin case above
    values = [0.0] * 3 + [5.0] * 7
    assert binned.psi(values) == pytest.approx(0.1694596, abs=1e-7)
    assert math.isnan(binned.psi([]))


def test_fit_bins_deciles_and_ties() -> None:
    values = np.arange(1, 101, dtype=np.float64)
    binned = fit_bins(values, bins=10)
    assert len(binned.edges) == 9
    assert binned.expected[0] == 0.0
    assert sum(binned.expected) == pytest.approx(1.0)
    assert all(p == pytest.approx(0.1) for p in binned.expected[1:])
    flags = fit_bins(np.array([0.0] * 90 + [1.0] * 10 + [np.nan] * 100))
    assert flags.edges == (0.0,)
    assert flags.expected == pytest.approx((0.5, 0.45, 0.05))


def test_reference_round_trip_and_report() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 2))
    reference = build_reference(x, ("a", "b"), rng.integers(300, 900, 1000), source="test")
    again = Reference.from_json(reference.to_json())
    assert again == reference
    same = drift_report(reference, [{"a": v[0], "b": v[1]} for v in x], [600.0] * 10, window="7d")
    assert same.n == 1000
    assert same.features["a"] == 0.0
    shifted = drift_report(
        reference, [{"a": v[0] + 1.0, "b": None} for v in x], [600.0], window="1d"
    )
    assert shifted.features["a"] is not None
    assert shifted.features["a"] > 0.25
    assert shifted.features["b"] is not None
    assert shifted.features["b"] > 5
    assert shifted.to_json()["window"] == "1d"
    with pytest.raises(ValueError, match="unsupported reference format"):
        Reference.from_json({"format": 99})


def test_alert_rules_use_the_documented_thresholds_and_real_metrics() -> None:
    from pathlib import Path

    import yaml

    from b2bscore.kit import metrics
    from b2bscore.model.drift import PSI_ACT, PSI_WATCH

    rules_file = Path(__file__).resolve().parents[2] / "deploy/prometheus/rules/drift.yml"
    doc = yaml.safe_load(rules_file.read_text())
    rules = {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}
    assert f"b2bscore_model_score_psi > {PSI_ACT}" in rules["B2bscoreScorePsiAct"]
    assert f"b2bscore_model_score_psi > {PSI_WATCH}" in rules["B2bscoreScorePsiWatch"]
    assert f"b2bscore_model_feature_psi > {PSI_ACT}" in rules["B2bscoreFeaturePsiAct"]
    exposed = {
        metrics.MODEL_SCORE_PSI._name,
        metrics.MODEL_FEATURE_PSI._name,
        metrics.MODEL_EVENT_APPLIED._name,
        metrics.CANARY_ROLLBACKS._name + "_total",
    }
    for expr in rules.values():
        assert any(name in expr for name in exposed), expr
