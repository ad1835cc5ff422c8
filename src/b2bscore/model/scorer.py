"""One LightGBM TreeSHAP call -> raw margin, calibrated PD and per-feature contributions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from b2bscore.features.build import FeatureVector
from b2bscore.model.bundle import ModelBundle


@dataclass(frozen=True, eq=False)
class Scored:
    """Model output for one application; contributions are in raw-margin (log-odds) units."""

    margin: float
    probability_of_default: float
    contributions: np.ndarray
    bias: float


def score(bundle: ModelBundle, vector: FeatureVector) -> Scored:
    """Score one feature vector; the contributions sum with the bias to the margin."""
    # pred_contrib already yields the margin (sum of SHAP values + expected value), so a
    # second raw_score prediction would only double the cost.
    row = bundle.contrib_predictor.contributions(vector.values)
    contributions = row[:-1]
    contributions.flags.writeable = False
    bias = float(row[-1])
    margin = float(contributions.sum()) + bias
    return Scored(
        margin=margin,
        probability_of_default=bundle.calibration.pd(margin),
        contributions=contributions,
        bias=bias,
    )
