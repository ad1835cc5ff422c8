"""Catalog consistency."""

from __future__ import annotations

import math

from b2bscore.features import catalog
from b2bscore.features.catalog import FAMILY_LABELS, FEATURE_NAMES, FEATURES


def test_names_unique_and_ordered() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert tuple(s.name for s in FEATURES) == FEATURE_NAMES


def test_every_family_has_labels_and_one_code() -> None:
    codes: dict[str, set[str]] = {}
    for spec in FEATURES:
        assert spec.family in FAMILY_LABELS
        fr, en = FAMILY_LABELS[spec.family]
        assert fr
        assert en
        codes.setdefault(spec.family, set()).add(spec.reason_code)
    assert all(len(c) == 1 for c in codes.values())
    assert len({next(iter(c)) for c in codes.values()}) == len(codes)


def test_monotone_values_and_labels_render() -> None:
    for spec in FEATURES:
        assert spec.monotone in (-1, 0, 1)
        assert spec.unit
        assert spec.description
        for value in (0.0, 1.5, -2.0, 1234.5):
            fr, en = spec.render(value)
            assert fr
            assert en
            assert "{" not in fr
            assert "{" not in en
        fr, en = spec.render(None)
        assert "indisponible" in fr
        assert "not available" in en
        assert not math.isnan(float(spec.monotone))


def test_fingerprint_stable_and_sensitive() -> None:
    fp = catalog.catalog_fingerprint()
    assert len(fp) == 64
    assert fp == catalog.catalog_fingerprint()
    assert "bank_negative_balance_days" in FEATURE_NAMES
