"""The model registry: which verified bundle is live, shadow or canary, and its history.

The choice lives in the database (``model_assignments``, one row per role) so that every
worker of every instance reads the same answer; every change is an insert-only,
hash-chained ``model_events`` row (who, when, from, to, why) written in the same
transaction. After the commit a change notice (the new event id) goes to the shared
cache, which the workers poll cheaply; they also re-read the table periodically, so a
lost notice or no Redis at all only delays a switch by seconds.

A bundle is verified before it gets a role: its hashes and feature schema (load_bundle)
and a smoke prediction through the whole decision core. A bundle that fails is refused
and nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.features.build import FeatureVector
from b2bscore.features.catalog import FEATURE_NAMES
from b2bscore.features.types import CreditRequest, Product
from b2bscore.kit.cache import Cache
from b2bscore.model.bundle import (
    MANIFEST_FILE,
    BundleError,
    ModelBundle,
    card_path,
    load_bundle,
    sha256_file,
)
from b2bscore.model.core import decide_on
from b2bscore.model.models import ROLES, ModelAssignment, ModelEvent

# The shared-cache key holding the id of the latest model event (the change notice).
NOTICE_KEY: Final = "b2bscore:models:event"
NOTICE_TTL_SECONDS: Final = 30 * 86_400
GENESIS_HASH: Final = "0" * 64
_BUNDLE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Serialises event appends on PostgreSQL (SQLite serialises writers anyway).
_EVENTS_LOCK: Final = 0x6D6F64656C73  # "models"


class RegistryError(Exception):
    """A registry command that cannot be done (unknown version, nothing to roll back to)."""


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """One bundle directory as the registry lists it."""

    model_id: str
    version: str
    path: Path
    created_at: str
    manifest_sha256: str
    data_fingerprint: str | None
    code_fingerprint: str | None
    auc: float | None
    brier: float | None
    calibration: str | None
    size_bytes: int

    def to_json(self, roles: Sequence[str]) -> dict[str, Any]:
        """The line printed by `b2bscore models list`."""
        return {
            "id": self.model_id,
            "version": self.version,
            "trained_at": self.created_at,
            "bundle_sha256": self.manifest_sha256,
            "data_fingerprint": self.data_fingerprint,
            "code_fingerprint": self.code_fingerprint,
            "auc": self.auc,
            "brier": self.brier,
            "calibration": self.calibration,
            "size_bytes": self.size_bytes,
            "roles": list(roles),
            "live": "live" in roles,
            "shadow": "shadow" in roles,
            "canary": "canary" in roles,
        }


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def catalogue(models_dir: Path) -> list[BundleInfo]:
    """Every bundle directory under models_dir, oldest version first (unverified read)."""
    infos: list[BundleInfo] = []
    for manifest in sorted(models_dir.glob(f"*/{MANIFEST_FILE}")):
        root = manifest.parent
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict):
            continue
        training = doc.get("training") or {}
        test = (doc.get("metrics") or {}).get("test") or {}
        infos.append(
            BundleInfo(
                model_id=str(doc.get("model_id", root.name)),
                version=str(doc.get("version", "")),
                path=root,
                created_at=str(doc.get("created_at", "")),
                manifest_sha256=sha256_file(manifest),
                data_fingerprint=training.get("data_fingerprint"),
                code_fingerprint=training.get("code_fingerprint"),
                auc=_num(test.get("auc")),
                brier=_num(test.get("brier")),
                calibration=(doc.get("calibration") or {}).get("method"),
                size_bytes=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
            )
        )
    return sorted(infos, key=lambda i: (_version_key(i.version), i.created_at, i.model_id))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def resolve(models_dir: Path, version: str) -> Path:
    """The bundle directory of a version or model id; RegistryError when unknown."""
    for info in catalogue(models_dir):
        if version in (info.version, info.model_id):
            return info.path
    raise RegistryError(f"no bundle {version!r} under {models_dir}")


def show_card(models_dir: Path, version: str) -> str:
    """The model card of a version (the regenerated addendum when there is one)."""
    return card_path(resolve(models_dir, version)).read_text(encoding="utf-8")


def next_version(models_dir: Path, prefix: str = "b2b-lgbm-") -> tuple[str, str]:
    """(model_id, version) one patch above the newest bundle: how `train` never overwrites."""
    infos = catalogue(models_dir)
    if not infos:
        now = datetime.now(UTC)
        version = f"{now.year}.{now.month}.0"
    else:
        parts = infos[-1].version.split(".")
        parts[-1] = str(int(parts[-1]) + 1) if parts[-1].isdigit() else parts[-1] + ".1"
        version = ".".join(parts)
    return f"{prefix}{version}", version


# --- verification -----------------------------------------------------------------

_SMOKE_REQUEST = CreditRequest("111111118", Decimal("25000.00"), Product.TERM_LOAN)


def smoke_vectors(bundle: ModelBundle) -> list[FeatureVector]:
    """Feature vectors a sound bundle must score: all missing, and typical values."""
    empty = np.full(len(FEATURE_NAMES), math.nan)
    typical = empty.copy()
    if bundle.reference is not None:
        for i, name in enumerate(FEATURE_NAMES):
            binned = bundle.reference.features.get(name)
            if binned is not None and binned.edges:
                typical[i] = binned.edges[len(binned.edges) // 2]
    vectors = []
    for values in (empty, typical):
        values.flags.writeable = False
        vectors.append(FeatureVector(values=values))
    return vectors


def verify(path: Path) -> ModelBundle:
    """Load a bundle (hashes, feature schema) and run a smoke prediction; BundleError."""
    bundle = load_bundle(path)
    for vector in smoke_vectors(bundle):
        try:
            core = decide_on(
                bundle, vector, _SMOKE_REQUEST, has_bank=True, has_books=True, has_registry=True
            )
        except Exception as error:  # any failure of the core refuses the bundle
            raise BundleError(f"smoke prediction failed: {error!r}") from error
        pd = core.scored.probability_of_default
        if not (math.isfinite(pd) and 0.0 < pd < 1.0) or not 0 <= core.outcome.score <= 1000:
            raise BundleError(f"smoke prediction out of range: PD {pd}")
    return bundle


# --- assignments and events -------------------------------------------------------


async def assignments(session: AsyncSession) -> dict[str, ModelAssignment]:
    """The current assignment of each role that has one."""
    rows = (await session.execute(select(ModelAssignment))).scalars().all()
    return {row.role: row for row in rows}


async def latest_event_id(session: AsyncSession) -> int:
    """Id of the newest model event (0 when none)."""
    row = await session.execute(select(ModelEvent.id).order_by(ModelEvent.id.desc()).limit(1))
    return int(row.scalar_one_or_none() or 0)


async def events(session: AsyncSession, limit: int = 100) -> list[ModelEvent]:
    """The newest model events first."""
    rows = await session.execute(select(ModelEvent).order_by(ModelEvent.id.desc()).limit(limit))
    return list(rows.scalars().all())


def event_hash(prev_hash: str, event: ModelEvent) -> str:
    """sha256 chaining one event to the previous one."""
    content = {
        "at": event.at.astimezone(UTC).isoformat(),
        "actor": event.actor,
        "action": event.action,
        "role": event.role,
        "from": event.from_model,
        "to": event.to_model,
        "detail": event.detail,
    }
    return hashlib.sha256(
        prev_hash.encode() + orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


async def verify_events(session: AsyncSession) -> int | None:
    """Id of the first event whose hash does not chain, or None when the history is intact."""
    prev = GENESIS_HASH
    rows = await session.execute(select(ModelEvent).order_by(ModelEvent.id))
    for event in rows.scalars():
        if event.prev_hash != prev or event_hash(prev, event) != event.row_hash:
            return event.id
        prev = event.row_hash
    return None


async def _append_event(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    role: str,
    from_model: str | None,
    to_model: str | None,
    detail: dict[str, Any],
) -> ModelEvent:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _EVENTS_LOCK})
    last = await session.execute(
        select(ModelEvent.row_hash).order_by(ModelEvent.id.desc()).limit(1)
    )
    prev = last.scalar_one_or_none() or GENESIS_HASH
    event = ModelEvent(
        at=datetime.now(UTC),
        actor=actor,
        action=action,
        role=role,
        from_model=from_model,
        to_model=to_model,
        detail=detail,
        prev_hash=prev,
        row_hash="",
    )
    event.row_hash = event_hash(prev, event)
    session.add(event)
    await session.flush()
    return event


async def _assign(
    session: AsyncSession,
    role: str,
    bundle: ModelBundle | None,
    *,
    actor: str,
    action: str,
    detail: dict[str, Any],
    percent: int | None = None,
    tenants: list[str] | None = None,
    from_default: str | None = None,
) -> ModelEvent:
    if role not in ROLES:
        raise RegistryError(f"unknown role {role!r}")
    current = await session.get(ModelAssignment, role, with_for_update=True)
    event = await _append_event(
        session,
        actor=actor,
        action=action,
        role=role,
        from_model=current.model_id if current else from_default,
        to_model=bundle.model_id if bundle else None,
        detail=detail,
    )
    if bundle is None:
        if current is not None:
            await session.delete(current)
    else:
        values = {
            "model_id": bundle.model_id,
            "version": bundle.version,
            "manifest_sha256": bundle.manifest_sha256,
            "percent": percent,
            "tenants": tenants,
            "since": event.at,
            "changed_by": actor,
            "event_id": event.id,
        }
        if current is None:
            session.add(ModelAssignment(role=role, **values))
        else:
            for key, value in values.items():
                setattr(current, key, value)
    await session.flush()
    return event


async def notify(cache: Cache | None, event_id: int) -> None:
    """Tell every worker that the assignments changed (best effort: they also poll)."""
    if cache is None:
        return
    try:
        await cache.set(NOTICE_KEY, str(event_id).encode(), NOTICE_TTL_SECONDS)
    except Exception:  # the periodic re-read still carries the change
        return


def _checked_name(version: str) -> str:
    if not _BUNDLE_NAME.fullmatch(version):
        raise RegistryError(f"{version!r} is not a bundle version or id")
    return version


async def promote(
    session: AsyncSession,
    models_dir: Path,
    version: str,
    *,
    actor: str,
    reason: str = "",
    default_live: str | None = None,
) -> ModelEvent:
    """Make a verified bundle live (BundleError when it does not verify: nothing changes).

    ``default_live`` names what the service serves before any promotion (its start-up
    bundle), so that the first promotion can be rolled back to it.
    """
    bundle = verify(resolve(models_dir, _checked_name(version)))
    current = (await assignments(session)).get("live")
    if current is not None and current.manifest_sha256 == bundle.manifest_sha256:
        raise RegistryError(f"{bundle.model_id} is already live")
    return await _assign(
        session,
        "live",
        bundle,
        actor=actor,
        action="promote",
        detail={"version": bundle.version, "bundle_sha256": bundle.manifest_sha256,
                "reason": reason},
        from_default=default_live,
    )  # fmt: skip


async def rollback(session: AsyncSession, models_dir: Path, *, actor: str) -> ModelEvent:
    """Return to the bundle that was live before the current one (verified again)."""
    current = (await assignments(session)).get("live")
    if current is None:
        raise RegistryError("no live assignment to roll back")
    made_it = await session.get(ModelEvent, current.event_id)
    previous = made_it.from_model if made_it is not None else None
    if not previous:
        raise RegistryError(f"{current.model_id} has no previous live version")
    bundle = verify(resolve(models_dir, previous))
    return await _assign(
        session,
        "live",
        bundle,
        actor=actor,
        action="rollback",
        detail={"version": bundle.version, "bundle_sha256": bundle.manifest_sha256,
                "rolled_back": current.model_id},
    )  # fmt: skip


async def set_shadow(
    session: AsyncSession, models_dir: Path, version: str | None, *, actor: str
) -> ModelEvent:
    """Make a verified bundle the shadow (None: no shadow)."""
    bundle = verify(resolve(models_dir, _checked_name(version))) if version else None
    return await _assign(
        session,
        "shadow",
        bundle,
        actor=actor,
        action="shadow_on" if bundle else "shadow_off",
        detail={"version": bundle.version if bundle else None},
    )


async def set_canary(
    session: AsyncSession,
    models_dir: Path,
    version: str | None,
    *,
    actor: str,
    percent: int = 0,
    tenants: Sequence[str] = (),
    action: str | None = None,
    reason: str = "",
) -> ModelEvent:
    """Answer percent % of companies (or the named tenants) with a verified candidate."""
    if version is not None and not (0 <= percent <= 100):
        raise RegistryError("percent must be between 0 and 100")
    bundle = verify(resolve(models_dir, _checked_name(version))) if version else None
    return await _assign(
        session,
        "canary",
        bundle,
        actor=actor,
        action=action or ("canary_on" if bundle else "canary_off"),
        detail={"version": bundle.version if bundle else None, "percent": percent,
                "tenants": list(tenants), "reason": reason},
        percent=percent if bundle else None,
        tenants=list(tenants) if bundle else None,
    )  # fmt: skip
