"""Repeated stratified cross-validated AUC of the pipeline's model on a labelled table."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from b2bscore.training.tabular import load_table

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

# Defaults with a halved learning rate and more rounds: on the Polish bankruptcy benchmark
# every extra regulariser (column/row subsampling, L2, extra_trees, fewer leaves, class
# weights) lost AUC under repeated CV; docs/MODEL.md has the figures.
# One thread per booster: folds run in parallel instead, and a fixed thread count is
# what makes LightGBM's histograms (hence the scores) bit-for-bit reproducible.
LGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "verbose": -1,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
}
LGBM_ROUNDS = 300


def stratified_splits(
    label: npt.NDArray[np.integer[Any]], *, folds: int, repeats: int, seed: int
) -> list[tuple[IndexArray, IndexArray]]:
    """Train/test index pairs of repeated stratified k-fold cross-validation."""
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(label.size), label)]


def fit_and_score(
    features: FloatArray, label: npt.NDArray[np.int8], new: FloatArray, *, seed: int
) -> FloatArray:
    """Fit the model on one training fold and score unseen rows (higher = riskier)."""
    params = {**LGBM_PARAMS, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(features, label), num_boost_round=LGBM_ROUNDS)
    return np.asarray(booster.predict(new), dtype=np.float64)


def _fold_auc(
    features: FloatArray,
    label: npt.NDArray[np.int8],
    split: tuple[IndexArray, IndexArray],
    seed: int,
    scorer: Callable[..., FloatArray],
) -> float:
    train, test = split
    scores = scorer(features[train], label[train], features[test], seed=seed)
    return float(roc_auc_score(label[test], scores))


def evaluate_dataset(
    path: Path,
    label: str,
    *,
    folds: int = 10,
    repeats: int = 3,
    seed: int = 42,
    n_jobs: int = 2,
) -> dict[str, Any]:
    """AUC of the pipeline's model under repeated stratified k-fold CV on a labelled file."""
    started = time.perf_counter()
    table = load_table(path, label)
    splits = stratified_splits(table.label, folds=folds, repeats=repeats, seed=seed)
    # Threads suffice: LightGBM releases the GIL while it trains and predicts.
    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        aucs = list(
            pool.map(
                lambda split: _fold_auc(table.features, table.label, split, seed, fit_and_score),
                splits,
            )
        )
    values = np.asarray(aucs)
    by_repeat = values.reshape(repeats, folds).mean(axis=1)
    return {
        "auc_mean": round(float(values.mean()), 4),
        "auc_std": round(float(values.std(ddof=1)), 4) if values.size > 1 else 0.0,
        "auc_repeat_means": [round(float(v), 4) for v in by_repeat],
        "folds": int(values.size),
        "n_splits": folds,
        "repeats": repeats,
        "rows": int(table.label.size),
        "positives": int(table.label.sum()),
        "features": len(table.feature_names),
        "missing_share": round(float(np.isnan(table.features).mean()), 4),
        "protocol": f"repeated stratified {folds}-fold CV x {repeats}, seed {seed}",
        "model": {"lightgbm": {**LGBM_PARAMS, "num_boost_round": LGBM_ROUNDS}},
        "fold_aucs": [round(float(v), 6) for v in values],
        "seconds": round(time.perf_counter() - started, 1),
    }
