"""Model bundles: ``models/<model_id>/{model.txt, bundle.json, MODEL_CARD.md, reference.json}``.

Loading verifies the sha256 of every file listed in bundle.json and that the bundle was
trained on the current feature catalog (same ordered names, same catalog fingerprint): a
model silently fed shifted columns would still answer, just wrongly, so any mismatch is a
hard ``BundleError``.

Bundles are immutable: ``save_bundle`` refuses an existing directory, because recorded
decisions name the bundle that made them and replay reloads it. What was added to a
bundle after it shipped (a regenerated model card, the drift reference computed from the
same training draw) lives under ``addenda/`` with its own manifest, bound to the sha256 of
the bundle's bundle.json: the hashed files, and so every replay, stay exactly as shipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from b2bscore.features.catalog import FEATURE_NAMES, catalog_fingerprint
from b2bscore.model.drift import REFERENCE_FILE, Reference
from b2bscore.model.fastpredict import ContribPredictor

BUNDLE_FORMAT = 1
MODEL_FILE = "model.txt"
MANIFEST_FILE = "bundle.json"
CARD_FILE = "MODEL_CARD.md"
ADDENDA_DIR = "addenda"
ADDENDA_MANIFEST = "addenda.json"
# Keeps the PD strictly inside (0, 1) so that odds and log-odds stay finite.
PD_FLOOR = 1e-6
PD_CEIL = 1.0 - 1e-6


class BundleError(Exception):
    """The bundle is missing, tampered with, or does not match the feature catalog."""


def _clip_pd(p: float) -> float:
    return min(max(p, PD_FLOOR), PD_CEIL)


@dataclass(frozen=True)
class Calibration:
    """Raw LightGBM margin -> calibrated probability of default.

    ``platt``: PD = sigmoid(a * margin + b). ``isotonic``: PD = interp(margin, x, y), a
    non-decreasing step fitted on held-out margins. Both are stored; ``method`` is used.
    """

    method: str = "platt"
    platt_a: float = 1.0
    platt_b: float = 0.0
    iso_x: tuple[float, ...] = ()
    iso_y: tuple[float, ...] = ()
    comparison: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("platt", "isotonic"):
            raise BundleError(f"unknown calibration method {self.method!r}")
        if self.method == "isotonic" and (not self.iso_x or len(self.iso_x) != len(self.iso_y)):
            raise BundleError("isotonic calibration needs equal, non-empty x and y")

    def pd(self, margin: float) -> float:
        """Calibrated probability of default of one raw margin."""
        if self.method == "isotonic":
            return _clip_pd(float(np.interp(margin, self.iso_x, self.iso_y)))
        z = self.platt_a * margin + self.platt_b
        # Split on the sign so exp never overflows.
        if z >= 0.0:
            return _clip_pd(1.0 / (1.0 + math.exp(-z)))
        e = math.exp(z)
        return _clip_pd(e / (1.0 + e))

    def pd_array(self, margins: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of default of many raw margins."""
        m = np.asarray(margins, dtype=np.float64)
        if self.method == "isotonic":
            p = np.interp(m, np.asarray(self.iso_x), np.asarray(self.iso_y))
        else:
            p = 0.5 * (1.0 + np.tanh(0.5 * (self.platt_a * m + self.platt_b)))
        clipped: np.ndarray = np.clip(p, PD_FLOOR, PD_CEIL)
        return clipped

    def to_json(self) -> dict[str, Any]:
        """JSON document stored under ``calibration`` in bundle.json."""
        return {
            "method": self.method,
            "platt": {"a": self.platt_a, "b": self.platt_b},
            "isotonic": {"x": list(self.iso_x), "y": list(self.iso_y)},
            "comparison": dict(self.comparison),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Calibration:
        """Inverse of ``to_json``."""
        try:
            iso = doc.get("isotonic") or {}
            return cls(
                method=str(doc["method"]),
                platt_a=float(doc["platt"]["a"]),
                platt_b=float(doc["platt"]["b"]),
                iso_x=tuple(float(v) for v in iso.get("x", ())),
                iso_y=tuple(float(v) for v in iso.get("y", ())),
                comparison=dict(doc.get("comparison") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bad calibration: {exc}") from exc


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A trained model with everything needed to score and explain with it."""

    model_id: str
    version: str
    feature_names: tuple[str, ...]
    booster: lgb.Booster
    calibration: Calibration
    policy: Mapping[str, Any]
    metrics: Mapping[str, Any]
    created_at: str
    training: Mapping[str, Any] = field(default_factory=dict)
    catalog_fingerprint: str = ""
    path: Path | None = None
    reference: Reference | None = None
    # sha256 of bundle.json, which lists the sha256 of every other file: the bundle's id.
    manifest_sha256: str = ""

    @cached_property
    def contrib_predictor(self) -> ContribPredictor:
        """The booster's prepared single-row ``pred_contrib`` predictor (built on first use)."""
        return ContribPredictor(self.booster)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version_key(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for p in version.split("."):
        try:
            parts.append(int(p))
        except ValueError:
            parts.append(-1)
    return tuple(parts)


def save_bundle(bundle: ModelBundle, models_dir: Path, model_card: str) -> Path:
    """Write ``models_dir/<model_id>/`` (model, card, reference, manifest); return it.

    Refuses (BundleError) when the directory exists: a shipped bundle is never rewritten.
    The files are written to a temporary directory renamed into place, so a crash never
    leaves a half-written bundle under the final name.
    """
    out = models_dir / bundle.model_id
    models_dir.mkdir(parents=True, exist_ok=True)
    try:
        # mkdir is the exclusive claim of the name: two writers cannot both get it.
        out.mkdir()
    except FileExistsError:
        raise BundleError(
            f"{out} already exists: bundles are immutable (decisions and replays name them); "
            "train under a new version"
        ) from None
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.model_id}-", dir=models_dir))
    try:
        (staging / MODEL_FILE).write_text(bundle.booster.model_to_string(), encoding="utf-8")
        (staging / CARD_FILE).write_text(model_card, encoding="utf-8")
        hashed = [MODEL_FILE, CARD_FILE]
        if bundle.reference is not None:
            bundle.reference.write(staging / REFERENCE_FILE)
            hashed.append(REFERENCE_FILE)
        manifest = {
            "format": BUNDLE_FORMAT,
            "model_id": bundle.model_id,
            "version": bundle.version,
            "created_at": bundle.created_at,
            "features": list(bundle.feature_names),
            "catalog_fingerprint": bundle.catalog_fingerprint or catalog_fingerprint(),
            "training": dict(bundle.training),
            "metrics": dict(bundle.metrics),
            "calibration": bundle.calibration.to_json(),
            "policy": dict(bundle.policy),
            "files": {name: sha256_file(staging / name) for name in hashed},
        }
        text = json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
        (staging / MANIFEST_FILE).write_text(text, encoding="utf-8")
        # Every worker reads the bundle; mkdtemp made the directory private.
        os.chmod(staging, 0o755)  # noqa: S103
        # Replaces the empty claimed directory in one step: readers see all or nothing.
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        out.rmdir()
        raise
    return out


def write_addenda(root: Path, files: Mapping[str, str], note: str, created_at: str) -> Path:
    """Add (or replace) files under ``root/addenda/``, bound to this bundle.json's sha256."""
    manifest_sha = sha256_file(root / MANIFEST_FILE)
    addenda = root / ADDENDA_DIR
    addenda.mkdir(exist_ok=True)
    existing: dict[str, str] = {}
    if (addenda / ADDENDA_MANIFEST).is_file():
        existing = dict(_read_addenda_manifest(addenda, manifest_sha).get("files", {}))
    for name, content in files.items():
        if Path(name).name != name or name == ADDENDA_MANIFEST:
            raise BundleError(f"bad addendum name {name!r}")
        (addenda / name).write_text(content, encoding="utf-8")
        existing[name] = sha256_file(addenda / name)
    doc = {
        "format": 1,
        "bundle_manifest_sha256": manifest_sha,
        "created_at": created_at,
        "note": note,
        "files": dict(sorted(existing.items())),
    }
    (addenda / ADDENDA_MANIFEST).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return addenda


def _read_addenda_manifest(addenda: Path, manifest_sha: str) -> dict[str, Any]:
    try:
        doc = json.loads((addenda / ADDENDA_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"unreadable {ADDENDA_DIR}/{ADDENDA_MANIFEST}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("bundle_manifest_sha256") != manifest_sha:
        raise BundleError(f"{ADDENDA_DIR} belongs to another {MANIFEST_FILE}")
    return doc


def verified_addenda(root: Path, manifest_sha: str) -> dict[str, Path]:
    """The verified files under addenda/ by name (empty when the bundle has none)."""
    addenda = root / ADDENDA_DIR
    if not (addenda / ADDENDA_MANIFEST).is_file():
        return {}
    doc = _read_addenda_manifest(addenda, manifest_sha)
    out: dict[str, Path] = {}
    for name, expected in dict(doc.get("files") or {}).items():
        target = addenda / str(name)
        if Path(name).name != name or not target.is_file():
            raise BundleError(f"addendum missing: {name}")
        if sha256_file(target) != expected:
            raise BundleError(f"sha256 mismatch for {ADDENDA_DIR}/{name}")
        out[str(name)] = target
    return out


def card_path(root: Path) -> Path:
    """The bundle's model card: the regenerated addendum when there is one."""
    addendum = root / ADDENDA_DIR / CARD_FILE
    return addendum if addendum.is_file() else root / CARD_FILE


def _load_reference(path: Path) -> Reference:
    try:
        return Reference.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        raise BundleError(f"unreadable {path.name}: {exc}") from exc


def load_bundle(path: Path) -> ModelBundle:
    """Load and verify a bundle directory (or its bundle.json); raise BundleError."""
    root = path.parent if path.name == MANIFEST_FILE else path
    manifest_path = root / MANIFEST_FILE
    try:
        raw = manifest_path.read_bytes()
        doc = json.loads(raw)
    except FileNotFoundError as exc:
        raise BundleError(f"no {MANIFEST_FILE} in {root}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"unreadable {MANIFEST_FILE}: {exc}") from exc
    manifest_sha = hashlib.sha256(raw).hexdigest()
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleError("unsupported bundle format")

    files = doc.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise BundleError(f"{MANIFEST_FILE} does not list {MODEL_FILE}")
    for name, expected in files.items():
        target = root / name
        if Path(name).name != name or not target.is_file():
            raise BundleError(f"bundle file missing: {name}")
        if sha256_file(target) != expected:
            raise BundleError(f"sha256 mismatch for {name}")

    features = tuple(doc.get("features") or ())
    if features != FEATURE_NAMES:
        raise BundleError("bundle feature list does not match the feature catalog")
    fingerprint = doc.get("catalog_fingerprint")
    if fingerprint != catalog_fingerprint():
        raise BundleError("bundle catalog fingerprint does not match the feature catalog")

    try:
        booster = lgb.Booster(model_str=(root / MODEL_FILE).read_text(encoding="utf-8"))
    except lgb.basic.LightGBMError as exc:
        raise BundleError(f"unreadable {MODEL_FILE}: {exc}") from exc
    if tuple(booster.feature_name()) != FEATURE_NAMES:
        raise BundleError("model.txt feature names do not match the feature catalog")

    addenda = verified_addenda(root, manifest_sha)
    reference_path = (
        root / REFERENCE_FILE if REFERENCE_FILE in files else addenda.get(REFERENCE_FILE)
    )
    reference = _load_reference(reference_path) if reference_path is not None else None

    try:
        return ModelBundle(
            model_id=str(doc["model_id"]),
            version=str(doc["version"]),
            feature_names=features,
            booster=booster,
            calibration=Calibration.from_json(doc["calibration"]),
            policy=dict(doc.get("policy") or {}),
            metrics=dict(doc.get("metrics") or {}),
            created_at=str(doc.get("created_at", "")),
            training=dict(doc.get("training") or {}),
            catalog_fingerprint=str(fingerprint),
            path=root,
            reference=reference,
            manifest_sha256=manifest_sha,
        )
    except KeyError as exc:
        raise BundleError(f"{MANIFEST_FILE} lacks {exc}") from exc


def latest_bundle_path(models_dir: Path) -> Path:
    """Directory of the newest bundle (highest version, then creation time) in models_dir."""
    candidates: list[tuple[tuple[int, ...], str, str, Path]] = []
    if models_dir.is_dir():
        for manifest in models_dir.glob(f"*/{MANIFEST_FILE}"):
            try:
                doc = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(doc, dict):
                continue
            version = str(doc.get("version", ""))
            created = str(doc.get("created_at", ""))
            key = (_version_key(version), created, manifest.parent.name, manifest.parent)
            candidates.append(key)
    if not candidates:
        raise BundleError(f"no model bundle in {models_dir}")
    return max(candidates)[3]
