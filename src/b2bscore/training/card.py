"""The model card of a bundle: what a model-risk reviewer reads before it goes live.

``full_card`` is the training card (use, data, model, metrics, calibration, features,
monotone constraints, limits) followed by the sections this module adds: provenance
fingerprints, results on real data where recorded, the reason-code catalogue and the
drift reference. The same function writes the card of a new bundle and regenerates the
card of a shipped one (as an addendum, so that the shipped hashes never change).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from b2bscore.features.catalog import FAMILY_CODES, FEATURES
from b2bscore.model.bundle import (
    ADDENDA_DIR,
    CARD_FILE,
    BundleError,
    ModelBundle,
    load_bundle,
    write_addenda,
)
from b2bscore.model.drift import PSI_ACT, PSI_WATCH, REFERENCE_FILE, reference_json
from b2bscore.model.policy import RULE_CATALOGUE
from b2bscore.training.dataset import build_dataset
from b2bscore.training.train import (
    data_fingerprint,
    model_card,
    split_indices,
    training_reference,
)

# The pipeline's result on public labelled data of real companies, as recorded in
# docs/MODEL.md ("Real data: Polish bankruptcy benchmark"). It measures the training
# pipeline on other features, not this bundle, and the card says so.
POLISH_BENCHMARK: Mapping[str, Any] = {
    "data": "Polish bankruptcy, 1year.arff (7,027 companies, 271 bankruptcies, 64 ratios)",
    "protocol": "repeated stratified 10-fold cross-validation, 3 repeats, random_state=42",
    "auc_mean": 0.9668,
    "auc_std": 0.0129,
    "learner": "LightGBM + XGBoost + small MLP, log-odds blend 0.4/0.4/0.2",
    "recorded_in": "docs/MODEL.md",
}


def _provenance(bundle: ModelBundle) -> list[str]:
    t = bundle.training
    return [
        "",
        "## Provenance",
        "",
        "- Bundle fingerprint: the sha256 of its bundle.json"
        + (
            f", `{bundle.manifest_sha256}`."
            if bundle.manifest_sha256
            else " (`b2bscore models list`)."
        ),
        f"- Training-data fingerprint: `{t.get('data_fingerprint', 'n/a')}`.",
        f"- Code fingerprint (sha256 of the featurising and training code): "
        f"`{t.get('code_fingerprint') or 'not recorded (bundle older than the registry)'}`.",
        f"- Feature catalog fingerprint: `{bundle.catalog_fingerprint}`.",
        f"- Libraries: {t.get('library_versions', {})}.",
    ]


def _real_data(bundle: ModelBundle) -> list[str]:
    recorded = bundle.metrics.get("real_data")
    lines = ["", "## Real data", ""]
    if isinstance(recorded, Mapping) and recorded:
        lines.append(f"Recorded with this bundle: {dict(recorded)}.")
        return lines
    b = POLISH_BENCHMARK
    lines += [
        "No labelled outcome of real French companies exists for this bundle: its features "
        "(bank flows, FEC books, Sirene/BODACC) are not in any public data set, so it is "
        "measured on the synthetic world only (above).",
        "",
        f"The training pipeline itself is benchmarked on real companies: {b['data']}, "
        f"{b['protocol']}, AUC **{b['auc_mean']:.4f} ± {b['auc_std']:.4f}** ({b['learner']}; "
        f"see {b['recorded_in']}). That figure is the pipeline's, on other features; it "
        "says the learner is sound, not that this bundle is calibrated for real borrowers. "
        "Outcomes recorded through `POST /v1/decisions/{id}/outcome` are reported by "
        "`b2bscore models performance`.",
    ]
    return lines


def _reason_codes() -> list[str]:
    lines = [
        "",
        "## Reason-code catalogue",
        "",
        "Model reasons: one per feature family (the family's most contributing feature "
        "labels it), adverse or favourable by the sign of its TreeSHAP contribution.",
        "",
        "| code | features |",
        "|---|---|",
    ]
    for family, code in FAMILY_CODES.items():
        names = ", ".join(f"`{s.name}`" for s in FEATURES if s.family == family)
        lines.append(f"| `{code}` | {names or 'n/a'} |")
    lines += [
        "",
        "Policy rules (hard rules of `b2bscore.model.policy`, listed before model reasons):",
        "",
        "| code | meaning |",
        "|---|---|",
        *(f"| `{code}` | {text} |" for code, text in RULE_CATALOGUE.items()),
    ]
    return lines


def _drift(bundle: ModelBundle) -> list[str]:
    ref = bundle.reference
    lines = ["", "## Drift reference", ""]
    if ref is None:
        lines.append("No reference distribution recorded: drift cannot be measured.")
        return lines
    lines.append(
        f"Binned distributions of every feature and of the score on {ref.n} training rows "
        f"({ref.source}). `b2bscore models drift` and the gauges "
        "`b2bscore_model_feature_psi` / `b2bscore_model_score_psi` "
        f"compare recent decisions with them: PSI below {PSI_WATCH} stable, {PSI_WATCH}-"
        f"{PSI_ACT} watch, above {PSI_ACT} act (deploy/prometheus/rules/drift.yml)."
    )
    return lines


def full_card(bundle: ModelBundle) -> str:
    """MODEL_CARD.md of a bundle, every section."""
    base = model_card(bundle).rstrip("\n")
    extra = [*_provenance(bundle), *_real_data(bundle), *_reason_codes(), *_drift(bundle)]
    return base + "\n" + "\n".join(extra) + "\n"


def add_shipped_addenda(
    roots: Sequence[Path], *, workers: int = 2, progress: Callable[[str], None] | None = None
) -> list[Path]:
    """Regenerate shipped bundles' cards and drift references as addenda.

    The training rows are rebuilt from the world with each bundle's own size and seed and
    must hash to the data fingerprint recorded at training time: the reference is then of
    exactly the rows the trees saw. model.txt, bundle.json and the shipped card are not
    touched. Bundles trained on the same draw share one rebuild.
    """
    say = progress or (lambda _message: None)
    built: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    written: list[Path] = []
    for root in roots:
        bundle = load_bundle(root)
        n, seed = int(bundle.training["n"]), int(bundle.training["seed"])
        if (n, seed) not in built:
            say(f"{bundle.model_id}: rebuilding its {n} training companies (seed {seed})")
            x, y, _, _ = build_dataset(n, seed, workers=workers)
            built[(n, seed)] = (x, y)
        x, y = built[(n, seed)]
        if data_fingerprint(x, y) != bundle.training.get("data_fingerprint"):
            raise BundleError(
                f"{bundle.model_id}: the rebuilt training data does not match its "
                "fingerprint; the world or the feature code changed since it was trained"
            )
        split = split_indices(n, seed)
        reference = training_reference(
            bundle.booster,
            bundle.calibration,
            bundle.policy,
            x[split.train],
            f"train split of {n} world companies, seed {seed} (rebuilt, fingerprint verified)",
        )
        created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        note = (
            "Added after shipping, outside the hashed files: the drift reference (rebuilt "
            "from the same world draw, data fingerprint verified) and the regenerated card."
        )
        write_addenda(root, {REFERENCE_FILE: reference_json(reference)}, note, created)
        write_addenda(root, {CARD_FILE: full_card(load_bundle(root))}, note, created)
        say(f"{bundle.model_id}: addenda written")
        written.append(root / ADDENDA_DIR)
    return written
