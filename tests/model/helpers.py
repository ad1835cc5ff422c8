"""A small LightGBM bundle trained on random catalog-shaped data, for model tests."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from b2bscore.features.catalog import FEATURE_NAMES, MONOTONE_CONSTRAINTS, catalog_fingerprint
from b2bscore.model.bundle import Calibration, ModelBundle
from b2bscore.model.policy import DEFAULT_THRESHOLDS


def random_matrix(n: int, seed: int) -> np.ndarray:
    """Standard-normal features with about 10 % missing values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def small_bundle(seed: int = 3) -> ModelBundle:
    """A 40-tree bundle whose label depends on a few features with the catalog's signs."""
    x = random_matrix(3000, seed)
    rng = np.random.default_rng(seed + 1)
    mono = np.asarray(MONOTONE_CONSTRAINTS, dtype=np.float64)
    logit = -2.5 + np.nan_to_num(x[:, :12]) @ (0.6 * mono[:12])
    y = (rng.random(len(x)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "learning_rate": 0.1,
        "min_data_in_leaf": 50,
        "monotone_constraints": list(MONOTONE_CONSTRAINTS),
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 1,
        "seed": seed,
        "verbose": -1,
    }
    data = lgb.Dataset(x, label=y, feature_name=list(FEATURE_NAMES), params={"verbose": -1})
    booster = lgb.train(params, data, num_boost_round=40)
    return ModelBundle(
        model_id="test-model",
        version="0.0.1",
        feature_names=FEATURE_NAMES,
        booster=booster,
        calibration=Calibration(method="platt", platt_a=1.0, platt_b=0.0),
        policy=dict(DEFAULT_THRESHOLDS),
        metrics={"auc": 0.5},
        created_at="2026-11-02T00:00:00Z",
        training={"n": 3000},
        catalog_fingerprint=catalog_fingerprint(),
    )
