"""A models directory for registry tests: the shipped bundles plus candidates made from them."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from b2bscore.model.bundle import load_bundle, save_bundle

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models"
LIVE_DEFAULT = "b2b-lgbm-2026.11.1"
GOOD = "b2b-lgbm-2026.11.9"  # the shipped trees under a new version
BAD = "b2b-lgbm-2026.11.8"  # verifies, but its PDs sit far above the live model's
CORRUPT = "b2b-lgbm-2026.11.7"  # model.txt altered after its hashes were written


def make_models_dir(root: Path) -> Path:
    """Copy the shipped bundles and derive the candidates; return the directory."""
    for bundle_dir in SHIPPED.iterdir():
        if (bundle_dir / "bundle.json").is_file():
            shutil.copytree(bundle_dir, root / bundle_dir.name)
    shipped = load_bundle(root / LIVE_DEFAULT)
    good = dataclasses.replace(shipped, model_id=GOOD, version="2026.11.9")
    save_bundle(good, root, "# Model card: good candidate\n")
    shifted = dataclasses.replace(shipped.calibration, platt_b=shipped.calibration.platt_b + 3.0)
    bad = dataclasses.replace(shipped, model_id=BAD, version="2026.11.8", calibration=shifted)
    save_bundle(bad, root, "# Model card: bad candidate\n")
    corrupt = dataclasses.replace(shipped, model_id=CORRUPT, version="2026.11.7")
    path = save_bundle(corrupt, root, "# Model card: corrupt candidate\n")
    text = (path / "model.txt").read_text()
    (path / "model.txt").write_text(text.replace("shrinkage=0.03", "shrinkage=0.3", 1))
    return root
