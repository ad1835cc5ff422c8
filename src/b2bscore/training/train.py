"""Train the LightGBM bundle on the synthetic world: deterministic, monotone, calibrated.

Splits of one deterministic permutation: 60 % trees, 10 % early stopping, 10 % to fit the
calibrations, 10 % to choose between them, 10 % test. The calibration parts are never
seen by the trees, so the PD they map to is honest; the test part is seen by nothing.

Model size is set by the latency budget of the decision core (<= 0.5 ms p99 on one core):
TreeSHAP costs about O(trees x leaves x depth^2), so the trees are small (at most 7 leaves,
depth 4) and the learning rate low enough (0.03, early-stopped) to reach the accuracy
plateau. On the same fresh companies this is within 0.001 AUC of the best configuration
found without the budget (7 leaves at lr 0.01, or 15-31 leaves at lr 0.01-0.02) at a
tenth of its TreeSHAP cost; see docs/MODEL.md and loadtests/core_benchmark.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import sklearn
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve

from b2bscore.features.build import build_features
from b2bscore.features.catalog import (
    FEATURE_NAMES,
    FEATURES,
    MONOTONE_CONSTRAINTS,
    catalog_fingerprint,
)
from b2bscore.model.bundle import Calibration, ModelBundle, save_bundle
from b2bscore.model.drift import Reference, build_reference
from b2bscore.model.policy import DEFAULT_THRESHOLDS, decide, score_points
from b2bscore.model.reasons import explain
from b2bscore.model.scorer import score
from b2bscore.training import world
from b2bscore.training.dataset import (
    TRAINING_AS_OF,
    build_dataset,
    parse_company,
    sample_request,
)

DEFAULT_MODEL_ID = "b2b-lgbm-2026.11.1"
DEFAULT_VERSION = "2026.11.1"
NUM_THREADS = 2
MAX_ROUNDS = 400
EARLY_STOPPING_ROUNDS = 40
SPLITS = (0.6, 0.1, 0.1, 0.1, 0.1)  # train, early stopping, calib fit, calib select, test
LATENCY_SAMPLES = 300
BOOTSTRAP_DRAWS = 500

BASE_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": "binary_logloss",
    "learning_rate": 0.03,
    "num_leaves": 7,
    "max_depth": 4,
    "min_data_in_leaf": 40,
    "min_sum_hessian_in_leaf": 1.0,
    "lambda_l2": 2.0,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "max_bin": 255,
    "monotone_constraints_method": "advanced",
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": NUM_THREADS,
    "verbose": -1,
}


@dataclass(frozen=True)
class Split:
    """Row indices of the five parts."""

    train: np.ndarray
    valid: np.ndarray
    calib_fit: np.ndarray
    calib_select: np.ndarray
    test: np.ndarray


def split_indices(n: int, seed: int) -> Split:
    """Deterministic five-way split of ``n`` rows."""
    order = np.random.Generator(np.random.PCG64([seed, 0x5EED])).permutation(n)
    bounds = np.floor(np.cumsum(SPLITS) * n).astype(int)
    bounds[-1] = n
    parts = np.split(order, bounds[:-1])
    return Split(*(np.sort(p) for p in parts))


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of the training matrix and labels (C order, float64 bytes)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov separation between defaulters and non-defaulters."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, KS, Brier, log-loss and mean predicted vs observed default rate."""
    if len(np.unique(y)) < 2:
        return {"n": float(len(y)), "default_rate": float(np.mean(y)) if len(y) else 0.0}
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    return {
        "n": float(len(y)),
        "auc": float(roc_auc_score(y, p)),
        "ks": ks_statistic(y, p),
        "brier": float(brier_score_loss(y, pc)),
        "log_loss": float(log_loss(y, pc, labels=[0.0, 1.0])),
        "default_rate": float(np.mean(y)),
        "mean_pd": float(np.mean(p)),
    }


def fit_platt(margin: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Unregularised logistic fit of y on the margin (Newton's method): (a, b)."""
    a, b = 1.0, 0.0
    for _ in range(iterations):
        z = a * margin + b
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        w = np.maximum(p * (1.0 - p), 1e-12)
        g = np.array([np.sum((p - y) * margin), np.sum(p - y)])
        h = np.array(
            [
                [np.sum(w * margin * margin), np.sum(w * margin)],
                [np.sum(w * margin), np.sum(w)],
            ]
        ) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return a, b


def fit_isotonic(margin: np.ndarray, y: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Isotonic step function of the margin, as threshold arrays for np.interp."""
    # A floor keeps empty low-risk bins from claiming a PD of exactly zero.
    iso = IsotonicRegression(y_min=1e-4, y_max=1.0 - 1e-4, out_of_bounds="clip")
    iso.fit(margin, y)
    return (
        tuple(float(v) for v in iso.X_thresholds_),
        tuple(float(v) for v in iso.y_thresholds_),
    )


def fit_calibration(
    fit_margin: np.ndarray, fit_y: np.ndarray, sel_margin: np.ndarray, sel_y: np.ndarray
) -> Calibration:
    """Fit Platt and isotonic on one part, keep the lower log-loss on the other."""
    a, b = fit_platt(fit_margin, fit_y)
    iso_x, iso_y = fit_isotonic(fit_margin, fit_y)
    candidates = {
        "platt": Calibration(method="platt", platt_a=a, platt_b=b, iso_x=iso_x, iso_y=iso_y),
        "isotonic": Calibration(method="isotonic", platt_a=a, platt_b=b, iso_x=iso_x, iso_y=iso_y),
    }
    comparison: dict[str, Any] = {"criterion": "log_loss on the calibration-select part"}
    for name, cal in candidates.items():
        p = cal.pd_array(sel_margin)
        comparison[name] = {
            "log_loss": float(log_loss(sel_y, p, labels=[0.0, 1.0])),
            "brier": float(brier_score_loss(sel_y, p)),
        }
    best = min(candidates, key=lambda k: (comparison[k]["log_loss"], comparison[k]["brier"]))
    chosen = candidates[best]
    return Calibration(
        method=chosen.method,
        platt_a=a,
        platt_b=b,
        iso_x=iso_x,
        iso_y=iso_y,
        comparison=comparison,
    )


def fit_booster(
    x: np.ndarray,
    y: np.ndarray,
    split: Split,
    seed: int,
    params: Mapping[str, Any] | None = None,
    *,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[lgb.Booster, dict[str, Any]]:
    """Train with monotone constraints and early stopping; return the model and its params."""
    full = {
        **BASE_PARAMS,
        "monotone_constraints": list(MONOTONE_CONSTRAINTS),
        "seed": seed,
        "bagging_seed": seed,
        "feature_fraction_seed": seed,
        "data_random_seed": seed,
        **(params or {}),
    }
    names = list(FEATURE_NAMES)
    train_set = lgb.Dataset(
        x[split.train],
        label=y[split.train],
        feature_name=names,
        params={"verbose": -1, "max_bin": full["max_bin"]},
        free_raw_data=True,
    )
    valid_set = lgb.Dataset(
        x[split.valid],
        label=y[split.valid],
        reference=train_set,
        feature_name=names,
        params={"verbose": -1},
    )
    booster = lgb.train(
        full,
        train_set,
        num_boost_round=max_rounds,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    # Reload from text so the object in memory is exactly the shipped model.txt.
    shipped = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return shipped, {**full, "num_boost_round": best}


def bootstrap_ci(
    y: np.ndarray, p: np.ndarray, seed: int, draws: int = BOOTSTRAP_DRAWS
) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals of AUC, KS and Brier (rows resampled)."""
    rng = np.random.Generator(np.random.PCG64([seed, 0xB0075]))
    stats: dict[str, list[float]] = {"auc": [], "ks": [], "brier": []}
    n = len(y)
    for _ in range(draws if n else 0):
        idx = rng.integers(0, n, n)
        yb, pb = y[idx], p[idx]
        if yb.min() == yb.max():
            continue  # a resample with one class has no ranking metric
        stats["auc"].append(float(roc_auc_score(yb, pb)))
        stats["ks"].append(ks_statistic(yb, pb))
        stats["brier"].append(float(np.mean((pb - yb) ** 2)))
    return {
        k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
        for k, v in stats.items()
        if v
    }


def calibration_report(
    calibration: Calibration, margin: np.ndarray, y: np.ndarray, true_pd: np.ndarray
) -> dict[str, Any]:
    """Both calibrations on one held-out part: log-loss, Brier and decile reliability."""
    out: dict[str, Any] = {}
    for method in ("platt", "isotonic"):
        cal = Calibration(
            method=method,
            platt_a=calibration.platt_a,
            platt_b=calibration.platt_b,
            iso_x=calibration.iso_x,
            iso_y=calibration.iso_y,
        )
        p = cal.pd_array(margin)
        out[method] = {
            "log_loss": float(log_loss(y, p, labels=[0.0, 1.0])),
            "brier": float(brier_score_loss(y, p)),
            "distinct_pds": len(np.unique(p)),
            "table": calibration_table(p, y, true_pd),
        }
    return out


def calibration_table(
    p: np.ndarray, y: np.ndarray, true_pd: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Deciles of predicted PD: mean predicted, observed default rate, mean true PD."""
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    rows = []
    for part in np.array_split(order, bins):
        if len(part) == 0:
            continue
        rows.append(
            {
                "n": float(len(part)),
                "mean_predicted_pd": float(p[part].mean()),
                "observed_default_rate": float(y[part].mean()),
                "mean_true_pd": float(true_pd[part].mean()),
            }
        )
    return rows


def _latency(bundle: ModelBundle, sirens: list[str], seed: int) -> dict[str, float]:
    """Decision-core time per call (features + score + reasons + policy), one thread.

    Each case runs ``rounds`` times after a warm-up; the best time per case measures the
    work itself, free of preemption by other processes, while the raw times show what a
    busy machine adds.
    """
    cases = []
    for siren in sirens[:LATENCY_SAMPLES]:
        company = world.company(siren)
        cases.append(
            (*parse_company(company, TRAINING_AS_OF), sample_request(siren, seed, company))
        )
    if not cases:
        return {}
    rounds = 4
    timings = np.zeros((rounds, len(cases)))
    for r in range(rounds):
        for i, (bank, books, record, request) in enumerate(cases):
            started = time.perf_counter()
            vec = build_features(bank, books, record, request)
            scored = score(bundle, vec)
            explain(bundle, scored, vec, limit=4)
            decide(
                scored.probability_of_default,
                vec,
                request,
                has_bank=bank is not None,
                has_books=books is not None,
                has_registry=record is not None,
                thresholds=bundle.policy,
            )
            timings[r, i] = time.perf_counter() - started
    measured = timings[1:] * 1e6  # round 0 only warms caches
    best = measured.min(axis=0)
    return {
        "decision_core_p50_us": float(np.percentile(best, 50)),
        "decision_core_p99_us": float(np.percentile(best, 99)),
        "decision_core_raw_p50_us": float(np.percentile(measured, 50)),
        "decision_core_raw_p99_us": float(np.percentile(measured, 99)),
        "cases": float(len(cases)),
    }


def _library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


# The code that turns a company into a feature vector and a model: a model is only
# reproducible with the same code, so its fingerprint goes into the bundle.
_CODE_PACKAGES = ("features", "sources", "model", "training", "sandbox")


def code_fingerprint() -> str:
    """sha256 over the featurising and training code (package-relative paths and bytes)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for package in _CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def training_reference(
    booster: lgb.Booster,
    calibration: Calibration,
    policy: Mapping[str, Any],
    x_train: np.ndarray,
    source: str,
) -> Reference:
    """Drift reference of the rows the trees were fitted on: features and scores."""
    margin = np.asarray(booster.predict(x_train, raw_score=True, num_threads=NUM_THREADS))
    scores = np.array([score_points(float(p), policy) for p in calibration.pd_array(margin)])
    return build_reference(x_train, FEATURE_NAMES, scores, source=source)


def _policy_json() -> dict[str, Any]:
    return json.loads(json.dumps(DEFAULT_THRESHOLDS, default=str))  # type: ignore[no-any-return]


def train(
    n: int,
    seed: int,
    out_dir: Path,
    *,
    model_id: str = DEFAULT_MODEL_ID,
    version: str = DEFAULT_VERSION,
    workers: int = 2,
    params: Mapping[str, Any] | None = None,
    measure_latency: bool = True,
    progress: Callable[[str], None] | None = None,
    outcomes: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Build the dataset, train, calibrate, evaluate and write the bundle; return its dir.

    ``outcomes`` (feature rows, 0/1 defaults) are labelled decisions added to the part the
    trees are fitted on only: the calibration and test parts stay pure world draws, so the
    metrics keep meaning the same thing. Refuses (BundleError) before any work when
    ``out_dir/model_id`` exists.
    """
    from b2bscore.model.bundle import BundleError
    from b2bscore.training.card import full_card

    say = progress or (lambda _message: None)
    if (out_dir / model_id).exists():
        raise BundleError(
            f"{out_dir / model_id} already exists: bundles are immutable; choose a new version"
        )
    started = time.perf_counter()
    last_report = [0.0]

    def dataset_progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last_report[0] >= 5.0:
            last_report[0] = now
            say(
                f"dataset: {done}/{total} companies ({100 * done // max(total, 1)} %), "
                f"{now - started:.0f} s"
            )

    say(f"dataset: building {n} companies with seed {seed} on {workers} workers")
    x, y, sirens, true_pd = build_dataset(n, seed, workers=workers, progress=dataset_progress)
    built = time.perf_counter()
    split = split_indices(n, seed)
    extra = 0
    if outcomes is not None and len(outcomes[1]):
        extra = len(outcomes[1])
        say(f"outcomes: {extra} labelled decisions added to the training part")
        split = Split(
            np.concatenate([split.train, np.arange(n, n + extra)]),
            split.valid,
            split.calib_fit,
            split.calib_select,
            split.test,
        )
        x = np.vstack([x, np.asarray(outcomes[0], dtype=np.float64)])
        y = np.concatenate([y, np.asarray(outcomes[1], dtype=np.float64)])
    say("fit: boosting with early stopping")
    booster, full_params = fit_booster(x, y, split, seed, params)
    fitted = time.perf_counter()
    say(f"fit: {booster.num_trees()} trees in {fitted - built:.1f} s; calibrating, evaluating")

    def margins(idx: np.ndarray) -> np.ndarray:
        return np.asarray(booster.predict(x[idx], raw_score=True, num_threads=NUM_THREADS))

    calibration = fit_calibration(
        margins(split.calib_fit),
        y[split.calib_fit],
        margins(split.calib_select),
        y[split.calib_select],
    )
    test_margin = margins(split.test)
    test_pd = calibration.pd_array(test_margin)
    metrics: dict[str, Any] = {
        "test": classification_metrics(y[split.test], test_pd),
        "test_oracle": classification_metrics(y[split.test], true_pd[split.test]),
        "test_ci95": bootstrap_ci(y[split.test], test_pd, seed),
        "test_oracle_ci95": bootstrap_ci(y[split.test], true_pd[split.test], seed),
        "calibration_methods_test": calibration_report(
            calibration, test_margin, y[split.test], true_pd[split.test]
        ),
        "valid": classification_metrics(y[split.valid], calibration.pd_array(margins(split.valid))),
        "calibration_table_test": calibration_table(test_pd, y[split.test], true_pd[split.test]),
        "num_trees": booster.num_trees(),
        "num_leaves": int(full_params["num_leaves"]),
        "feature_importance_gain": {
            name: float(v)
            for name, v in zip(FEATURE_NAMES, booster.feature_importance("gain"), strict=True)
        },
    }
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    bundle = ModelBundle(
        model_id=model_id,
        version=version,
        feature_names=FEATURE_NAMES,
        booster=booster,
        calibration=calibration,
        policy=_policy_json(),
        metrics=metrics,
        created_at=created,
        training={
            "world_version": world.WORLD_VERSION,
            "n": n,
            "seed": seed,
            "as_of": TRAINING_AS_OF.isoformat(),
            "splits": dict(
                zip(
                    ("train", "valid", "calib_fit", "calib_select", "test"),
                    (
                        len(split.train),
                        len(split.valid),
                        len(split.calib_fit),
                        len(split.calib_select),
                        len(split.test),
                    ),
                    strict=True,
                )
            ),
            "default_rate": float(np.mean(y)) if len(y) else 0.0,
            "labelled_outcomes": extra,
            "data_fingerprint": data_fingerprint(x, y),
            "code_fingerprint": code_fingerprint(),
            "params": full_params,
            "library_versions": _library_versions(),
            "dataset_seconds": round(built - started, 1),
            "fit_seconds": round(fitted - built, 1),
        },
        catalog_fingerprint=catalog_fingerprint(),
        reference=training_reference(
            booster,
            calibration,
            _policy_json(),
            x[split.train],
            f"train split of {n} world companies, seed {seed}",
        ),
    )
    if measure_latency:
        say("latency: timing the decision core on test companies")
        test_sirens = [sirens[i] for i in split.test]
        metrics["latency"] = _latency(bundle, test_sirens, seed)
    path = save_bundle(bundle, out_dir, full_card(bundle))
    say(f"written: {path} in {time.perf_counter() - started:.0f} s")
    return path


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare pipe would end the Markdown table cell


def _ci(ci: Mapping[str, Any], key: str) -> str:
    lo_hi = ci.get(key)
    return f"[{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else "n/a"


def _reliability_rows(rows: list[dict[str, float]]) -> list[str]:
    return [
        f"| {row['n']:.0f} | {row['mean_predicted_pd']:.4f} | "
        f"{row['observed_default_rate']:.4f} | {row['mean_true_pd']:.4f} |"
        for row in rows
    ]


def model_card(bundle: ModelBundle) -> str:
    """MODEL_CARD.md of a bundle."""
    m, t = bundle.metrics, bundle.training
    test, oracle = m.get("test", {}), m.get("test_oracle", {})
    ci, oracle_ci = m.get("test_ci95", {}), m.get("test_oracle_ci95", {})
    cal = bundle.calibration
    params = t.get("params", {})
    lines = [
        f"# Model card: {bundle.model_id}",
        "",
        f"Version {bundle.version}, trained {bundle.created_at}. LightGBM gradient-boosted "
        "trees giving the 12-month probability of default (PD) of a French company asking "
        "for B2B credit, explained with TreeSHAP reason codes.",
        "",
        "## Intended use",
        "",
        "Instant pre-screening of B2B credit requests (BNPL, invoice financing, credit lines, "
        "term loans) inside `POST /v1/score`. Decisions combine the PD with the hard rules "
        "of `b2bscore.model.policy`; a `review` goes to a human analyst. Not for consumer "
        "credit, not for pricing without a separate validation on real outcomes, not as the "
        "sole ground for a decline without the reasons being shown to the applicant.",
        "",
        "## Training data",
        "",
        f"- Synthetic world `{t.get('world_version')}`: {t.get('n')} companies drawn with "
        f"seed {t.get('seed')}, as of {t.get('as_of')}; default rate "
        f"{_fmt(t.get('default_rate'))}. Labels are Bernoulli draws of each company's true "
        "12-month PD.",
        "- Each company is rendered in the providers' wire formats and parsed by the "
        "service's own adapters, then featurized by `build_features`: training and serving "
        "share one code path (tests/training/test_parity.py compares them over HTTP).",
        f"- Splits: {t.get('splits')} (trees / early stopping / calibration fit / "
        f"calibration choice / test). Data fingerprint `{t.get('data_fingerprint')}`.",
        "- The world is synthetic: performance here measures how well the pipeline recovers "
        "a known PD, not performance on real French companies.",
        "",
        "## Model",
        "",
        f"- {m.get('num_trees')} trees of at most {m.get('num_leaves')} leaves (depth "
        f"{params.get('max_depth')}), learning rate {params.get('learning_rate')}, early "
        "stopping on a held-out part, deterministic training (fixed seed and threads): "
        "the same seed gives a byte-identical model.txt.",
        "- Small, shallow trees keep TreeSHAP cheap: the decision core (features, one "
        "`pred_contrib` call, reasons, policy) must stay under 0.5 ms p99 on one core. "
        "The model-size choice is measured in docs/MODEL.md.",
        "",
        "## Metrics (test part, never used for fitting or selection)",
        "",
        f"95 % intervals: percentile bootstrap over the {test.get('n', 0):.0f} test "
        f"companies ({BOOTSTRAP_DRAWS} resamples).",
        "",
        "| metric | model | model 95 % CI | oracle (true PD) | oracle 95 % CI |",
        "|---|---|---|---|---|",
    ]
    for key in ("auc", "ks", "brier", "log_loss", "mean_pd"):
        lines.append(
            f"| {key} | {_fmt(test.get(key, math.nan))} | {_ci(ci, key)} | "
            f"{_fmt(oracle.get(key, math.nan))} | {_ci(oracle_ci, key)} |"
        )
    comparison = dict(cal.comparison)
    methods = m.get("calibration_methods_test", {})
    lines += [
        "",
        "## Calibration",
        "",
        f"The raw margin is mapped to a PD by `{cal.method}`, fitted on the calibration-fit "
        "part (unseen by the trees) and chosen over the other method by log-loss on the "
        "calibration-choice part (unseen by the trees and by the fit).",
        "",
        "| method | log-loss (choice part) | Brier (choice part) | log-loss (test) | "
        "Brier (test) | distinct PDs (test) |",
        "|---|---|---|---|---|---|",
    ]
    for method in ("platt", "isotonic"):
        sel, tst = comparison.get(method, {}), methods.get(method, {})
        lines.append(
            f"| {method}{' (used)' if method == cal.method else ''} | "
            f"{_fmt(sel.get('log_loss', math.nan))} | {_fmt(sel.get('brier', math.nan))} | "
            f"{_fmt(tst.get('log_loss', math.nan))} | {_fmt(tst.get('brier', math.nan))} | "
            f"{tst.get('distinct_pds', 'n/a')} |"
        )
    lines += [
        "",
        f"Platt: PD = sigmoid({cal.platt_a:.4f} x margin + {cal.platt_b:.4f}). "
        f"Isotonic: a step function with {len(cal.iso_x)} steps.",
        "",
        f"Reliability by decile of predicted PD (test part, `{cal.method}`):",
        "",
        "| n | mean predicted PD | observed default rate | mean true PD |",
        "|---|---|---|---|",
        *_reliability_rows(m.get("calibration_table_test", [])),
    ]
    lat = m.get("latency") or {}
    if lat:
        lines += [
            "",
            "## Latency",
            "",
            f"Decision-core time per call on the training machine, best of 3 per company over "
            f"{lat['cases']:.0f} test companies: p50 {lat['decision_core_p50_us']:.0f} µs, "
            f"p99 {lat['decision_core_p99_us']:.0f} µs; all calls as the machine was (other "
            f"load included): p50 {lat['decision_core_raw_p50_us']:.0f} µs, p99 "
            f"{lat['decision_core_raw_p99_us']:.0f} µs. loadtests/core_benchmark.py measures "
            "it pinned to one core.",
        ]
    lines += [
        "",
        "## Features",
        "",
        "| feature | family | monotone (risk) | unit | description |",
        "|---|---|---|---|---|",
    ]
    for spec in FEATURES:
        lines.append(
            f"| `{spec.name}` | {spec.family} | {spec.monotone:+d} | {spec.unit} | "
            f"{_cell(spec.description)} |"
        )
    increasing = [f"`{s.name}`" for s in FEATURES if s.monotone > 0]
    decreasing = [f"`{s.name}`" for s in FEATURES if s.monotone < 0]
    free = [f"`{s.name}`" for s in FEATURES if s.monotone == 0]
    lines += [
        "",
        "## Monotone constraints",
        "",
        "Every feature with a known direction of risk is constrained (LightGBM "
        "`monotone_constraints`, method `advanced`), so that a better value can never raise "
        "the PD and a reason code always points the way the applicant can act:",
        "",
        f"- PD can only rise with: {', '.join(increasing)}.",
        f"- PD can only fall with: {', '.join(decreasing)}.",
        f"- Unconstrained (no defensible direction): {', '.join(free)}.",
        "",
        "## Limitations",
        "",
        "- Trained on a synthetic world; recalibrate and revalidate on real outcomes first.",
        "- The test part holds few defaults (see its size and default rate): the intervals "
        "above, not the point estimates, say what is known.",
        "- Request-size features carry no default signal in this world (labels do not "
        "depend on the request); the policy, not the model, sizes the limit.",
        "- Missing sources are scored (LightGBM handles missing values) but the policy "
        "sends missing bank or registry data to review.",
        "- Bank features cover 90 days: seasonal businesses can look better or worse than "
        "their year.",
        f"- Policy thresholds shipped with the bundle: approve below "
        f"{Decimal(str(bundle.policy.get('approve_max_pd')))} PD, decline from "
        f"{Decimal(str(bundle.policy.get('decline_min_pd')))} PD.",
        "",
    ]
    return "\n".join(lines)
