"""Loader and repeated stratified cross-validation on small synthetic tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import make_classification

from b2bscore.training.crossval import blend_probabilities, evaluate_dataset, stratified_splits
from b2bscore.training.tabular import load_table

ARFF = """% a comment
@relation 'tiny'

@attribute Attr1 numeric
@attribute 'Attr 2' real
@attribute class {0,1}

@data
0.5,?,0
?,2.5,1
1.5,-3e2,'1'
"""


def _synthetic(
    tmp_path: Path, *, shuffle_labels: bool = False, rows: int = 600
) -> tuple[Path, npt.NDArray[np.int_]]:
    features, label = make_classification(
        n_samples=rows,
        n_features=12,
        n_informative=6,
        weights=[0.85, 0.15],
        class_sep=1.2,
        random_state=7,
    )
    rng = np.random.default_rng(3)
    features[rng.random(features.shape) < 0.05] = np.nan
    if shuffle_labels:
        label = rng.permutation(label)
    path = tmp_path / "table.csv"
    lines = [",".join([f"f{i}" for i in range(features.shape[1])] + ["target"])]
    for row, value in zip(features, label, strict=True):
        cells = ["" if np.isnan(x) else repr(float(x)) for x in row]
        lines.append(",".join([*cells, str(int(value))]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, np.asarray(label)


def test_arff_reads_question_marks_as_nan_and_nominal_label(tmp_path: Path) -> None:
    path = tmp_path / "tiny.arff"
    path.write_text(ARFF, encoding="utf-8")
    table = load_table(path, "class")
    assert table.feature_names == ("Attr1", "Attr 2")
    assert table.features.shape == (3, 2)
    assert np.isnan(table.features[0, 1])
    assert np.isnan(table.features[1, 0])
    assert table.features[2, 1] == -300.0
    assert table.label.tolist() == [0, 1, 1]


def test_csv_reads_blanks_and_na_as_nan(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text("a,label,b\n1.0,no,NA\n,yes,2\n3,no,4\n", encoding="utf-8")
    table = load_table(path, "label")
    assert table.feature_names == ("a", "b")
    assert np.isnan(table.features[0, 1])
    assert np.isnan(table.features[1, 0])
    assert table.label.tolist() == [0, 1, 0]


def test_loader_rejects_a_missing_label_column(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text("a,b\n1,0\n2,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no column"):
        load_table(path, "class")


def test_every_fold_holds_positives() -> None:
    label = np.zeros(500, dtype=np.int8)
    label[:20] = 1
    splits = stratified_splits(label, folds=10, repeats=3, seed=42)
    assert len(splits) == 30
    for train, test in splits:
        assert label[test].sum() == 2
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == label.size


def test_evaluate_dataset_reports_a_sane_reproducible_auc(tmp_path: Path) -> None:
    path, label = _synthetic(tmp_path)
    first = evaluate_dataset(path, "target", folds=3, repeats=1, seed=5, n_jobs=2)
    for key in ("auc_mean", "auc_std", "folds", "rows"):
        assert key in first
    assert first["rows"] == 600
    assert first["folds"] == 3
    assert first["positives"] == int(label.sum())
    assert 0.8 < first["auc_mean"] <= 1.0
    assert 0.0 <= first["auc_std"] < 0.1
    second = evaluate_dataset(path, "target", folds=3, repeats=1, seed=5, n_jobs=1)
    assert second["fold_aucs"] == first["fold_aucs"]


def test_shuffled_labels_score_at_chance(tmp_path: Path) -> None:
    path, _ = _synthetic(tmp_path, shuffle_labels=True)
    result = evaluate_dataset(path, "target", folds=3, repeats=1, seed=5, n_jobs=2)
    assert abs(result["auc_mean"] - 0.5) < 0.1


def test_blend_averages_log_odds_row_by_row() -> None:
    first = np.array([0.5, 0.9, 0.01])
    second = np.array([0.5, 0.1, 0.04])
    blended = blend_probabilities([first, second])
    # Odds of the last row: geometric mean of 1/99 and 4/96.
    odds = 1.0 / np.sqrt(99.0 * 24.0)
    assert blended == pytest.approx([0.5, 0.5, odds / (1.0 + odds)])
    # Row-wise: scoring a subset gives the same values as scoring the whole batch.
    assert blend_probabilities([first[1:], second[1:]]).tolist() == blended[1:].tolist()
    # A saturated member is clipped, not allowed to produce 0, 1 or NaN.
    extreme = blend_probabilities([np.array([0.0, 1.0]), np.array([0.5, 0.5])])
    assert np.all((extreme > 0.0) & (extreme < 1.0))
    with pytest.raises(ValueError, match="no member"):
        blend_probabilities([])
