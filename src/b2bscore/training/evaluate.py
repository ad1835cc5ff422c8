"""Evaluate a bundle on fresh companies, next to the oracle that knows the true PD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from b2bscore.model.bundle import load_bundle
from b2bscore.training import world
from b2bscore.training.dataset import build_dataset_for
from b2bscore.training.train import bootstrap_ci, calibration_table, classification_metrics

# Extra draws so that excluding the training companies still leaves n fresh ones.
_OVERDRAW = 1.25


def fresh_sirens(n: int, seed: int, exclude: set[str]) -> list[str]:
    """n SIRENs of draw ``seed`` that are not in ``exclude`` (e.g. the training set)."""
    want = n
    while True:
        drawn = [
            s for s in world.sample_sirens(int(want * _OVERDRAW) + 16, seed) if s not in exclude
        ]
        if len(drawn) >= n:
            return drawn[:n]
        want *= 2


def evaluate(bundle_path: Path, n: int, seed: int, workers: int = 2) -> dict[str, Any]:
    """Model vs oracle AUC, KS, Brier and decile calibration on n unseen companies."""
    bundle = load_bundle(bundle_path)
    training = bundle.training
    exclude: set[str] = set()
    if "n" in training and "seed" in training:
        exclude = set(world.sample_sirens(int(training["n"]), int(training["seed"])))
    sirens = fresh_sirens(n, seed, exclude)
    x, y, true_pd = build_dataset_for(sirens, seed, workers)
    margin = np.asarray(bundle.booster.predict(x, raw_score=True, num_threads=2))
    pd = bundle.calibration.pd_array(margin)
    thresholds = bundle.policy
    approve = float(thresholds.get("approve_max_pd", 0.03))
    decline = float(thresholds.get("decline_min_pd", 0.15))
    bands = np.digitize(pd, [approve, decline])
    band_rows = {}
    for k, name in enumerate(("approve", "review", "decline")):
        mask = bands == k
        band_rows[name] = {
            "share": float(mask.mean()) if len(mask) else 0.0,
            "observed_default_rate": float(y[mask].mean()) if mask.any() else 0.0,
            "mean_predicted_pd": float(pd[mask].mean()) if mask.any() else 0.0,
        }
    return {
        "model_id": bundle.model_id,
        "version": bundle.version,
        "n": n,
        "seed": seed,
        "excluded_training_companies": len(exclude),
        "model": classification_metrics(y, pd),
        "oracle": classification_metrics(y, true_pd),
        "model_ci95": bootstrap_ci(y, pd, seed),
        "oracle_ci95": bootstrap_ci(y, true_pd, seed),
        "calibration_method": bundle.calibration.method,
        "calibration_table": calibration_table(pd, y, true_pd),
        "pd_bands": band_rows,
    }
