"""Labelled numeric tables from ARFF or CSV files, missing values as NaN."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

# Spellings of "missing" seen in exported credit and accounting tables.
_MISSING = frozenset({"", "?", "na", "n/a", "nan", "null", "none"})


@dataclass(frozen=True)
class Table:
    """A feature matrix, a 0/1 label vector and the feature names."""

    features: npt.NDArray[np.float64]
    label: npt.NDArray[np.int8]
    feature_names: tuple[str, ...]


def _number(cell: str) -> float:
    text = cell.strip().strip("'\"")
    if text.lower() in _MISSING:
        return float("nan")
    return float(text)


def _label_values(cells: list[str], label: str) -> npt.NDArray[np.int8]:
    values = [cell.strip().strip("'\"") for cell in cells]
    if any(value.lower() in _MISSING for value in values):
        raise ValueError(f"label column {label!r} has missing values")
    distinct = sorted(set(values))
    if len(distinct) != 2:
        raise ValueError(f"label column {label!r} must hold two classes, found {distinct[:5]}")
    # Numeric labels keep their meaning (the larger is the positive class); other
    # spellings fall back to sorted order, which is the usual {no, yes} case.
    try:
        positive = max(distinct, key=float)
    except ValueError:
        positive = distinct[1]
    return np.asarray([value == positive for value in values], dtype=np.int8)


def _split_arff_row(line: str) -> list[str]:
    # csv handles quoted nominal values that contain commas.
    return next(csv.reader(io.StringIO(line), skipinitialspace=True))


def _read_arff(path: Path) -> tuple[list[str], list[list[str]]]:
    names: list[str] = []
    rows: list[list[str]] = []
    in_data = False
    with path.open(encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line.startswith("%"):
                continue
            if in_data:
                if line.startswith("{"):
                    raise ValueError("sparse ARFF rows are not supported")
                rows.append(_split_arff_row(line))
                continue
            lowered = line.lower()
            if lowered.startswith("@attribute"):
                rest = line[len("@attribute") :].strip()
                if rest[0] in "'\"":
                    quote = rest[0]
                    names.append(rest[1 : rest.index(quote, 1)])
                else:
                    names.append(rest.split(None, 1)[0])
            elif lowered.startswith("@data"):
                in_data = True
    return names, rows


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        sample = handle.read(65536)
        handle.seek(0)
        try:
            dialect: type[csv.Dialect] = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(handle, dialect)
        names = [name.strip() for name in next(reader)]
        rows = [row for row in reader if row and any(cell.strip() for cell in row)]
    return names, rows


def load_table(path: Path, label: str) -> Table:
    """Read an ARFF or CSV file of numeric features and a binary label column."""
    if path.suffix.lower() == ".arff":
        names, rows = _read_arff(path)
    else:
        names, rows = _read_csv(path)
    if label not in names:
        raise ValueError(f"no column {label!r} in {path} (columns: {', '.join(names[:10])}...)")
    width = len(names)
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"{path}: data row {number} has {len(row)} cells, expected {width}")
    target = names.index(label)
    feature_columns = [i for i in range(width) if i != target]
    try:
        features = np.asarray(
            [[_number(row[i]) for i in feature_columns] for row in rows], dtype=np.float64
        ).reshape(len(rows), len(feature_columns))
    except ValueError as exc:
        raise ValueError(f"{path}: non-numeric feature value ({exc})") from exc
    return Table(
        features=features,
        label=_label_values([row[target] for row in rows], label),
        feature_names=tuple(names[i] for i in feature_columns),
    )
