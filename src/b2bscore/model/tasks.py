"""The model's background work in each worker: follow the registry, shadow, guard, drift.

One asyncio task per worker, started by the app's lifespan, never on a request's path:

- follow the registry: poll the change notice in the shared cache every
  ``model_poll_seconds`` (one GET) and re-read the assignments when it moved, or every
  ``model_reread_seconds`` anyway (no Redis, a lost notice); load and verify the bundles
  off the event loop, then swap ``state.serving`` in one assignment;
- shadow: score with the shadow, in batches, the decisions it has not scored yet;
- canary guard: roll the candidate back when it crosses the documented thresholds;
- drift: refresh the PSI gauges of the live model.

Work that must happen once across workers (shadow, guard, drift) takes a PostgreSQL
advisory lock for the round (try-lock: a busy worker skips); on SQLite there is one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.kit.logging import throttle
from b2bscore.kit.metrics import (
    CANARY_ROLLBACKS,
    MODEL_EVENT_APPLIED,
    MODEL_FEATURE_PSI,
    MODEL_SCORE_PSI,
    SHADOW_SCORED,
)
from b2bscore.kit.state import AppState
from b2bscore.model import registry
from b2bscore.model import service as model_service
from b2bscore.model.bundle import BundleError, ModelBundle, load_bundle
from b2bscore.model.models import ModelAssignment
from b2bscore.model.serving import ServingModels

log = logging.getLogger(__name__)

_SHADOW_LOCK: Final = 0x5348414457  # distinct advisory keys per kind of round
_GUARD_LOCK: Final = 0x4755415244
_DRIFT_LOCK: Final = 0x4452494654
GUARD_ACTOR: Final = "canary-guard"


@contextlib.asynccontextmanager
async def _round(session: AsyncSession, key: int) -> AsyncIterator[bool]:
    """True when this worker holds the round's lock (always on SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        yield True
        return
    got = (await session.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
    try:
        yield bool(got)
    finally:
        if got:
            await session.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


class ModelSupervisor:
    """Keeps one worker's ``state.serving`` in step with the registry and runs its rounds."""

    def __init__(
        self,
        state: AppState,
        default: ModelBundle,
        thresholds: model_service.CanaryThresholds | None = None,
    ) -> None:
        self.state = state
        self.default = default
        self.thresholds = thresholds or model_service.CanaryThresholds()
        self.seen_event = -1
        self.notice: bytes | None = None
        self.last_read = 0.0
        self.last_shadow = self.last_guard = 0.0
        # The first drift round a little after start, not during it.
        self.last_drift = time.monotonic() - state.settings.drift_seconds + 30.0
        self.shadow_cursor: tuple[str, datetime] | None = None  # (model id, resume from)

    @property
    def models_dir(self) -> Path:
        """Where the bundles are."""
        return self.state.settings.models_dir

    async def _bundle(self, assignment: ModelAssignment) -> ModelBundle:
        cached = self.state.bundles.get(assignment.model_id)
        if cached is not None and cached.manifest_sha256 == assignment.manifest_sha256:
            return cached
        path = registry.resolve(self.models_dir, assignment.model_id)
        bundle = await asyncio.to_thread(load_bundle, path)
        if bundle.manifest_sha256 != assignment.manifest_sha256:
            # The directory changed since it was verified and assigned: never serve it.
            raise BundleError(f"{assignment.model_id} is not the bundle that was verified")
        self.state.bundles[bundle.model_id] = bundle
        return bundle

    async def sync(self) -> bool:
        """Re-read the assignments; swap the serving snapshot when they changed."""
        async with self.state.sessionmaker() as session:
            assigned = await registry.assignments(session)
            latest = await registry.latest_event_id(session)
        self.last_read = time.monotonic()
        if latest == self.seen_event:
            return False
        try:
            live = await self._bundle(assigned["live"]) if "live" in assigned else self.default
            shadow = await self._bundle(assigned["shadow"]) if "shadow" in assigned else None
            canary_row = assigned.get("canary")
            canary = await self._bundle(canary_row) if canary_row else None
        except (BundleError, registry.RegistryError) as error:
            # Keep serving what we have: a bundle that cannot be loaded here is an
            # operator's problem to see, not a reason to stop answering.
            log.error("model registry event %s not applied: %s", latest, error)
            return False
        self.state.serving = ServingModels(
            live=live,
            shadow=shadow,
            canary=canary,
            canary_percent=int(canary_row.percent or 0) if canary_row else 0,
            canary_tenants=frozenset(canary_row.tenants or ()) if canary_row else frozenset(),
            event_id=latest,
        )
        self.state.bundle = live
        if self.seen_event >= 0:
            log.info(
                "model registry event %s applied: live %s, shadow %s, canary %s",
                latest,
                live.model_id,
                shadow.model_id if shadow else None,
                canary.model_id if canary else None,
            )
        self.seen_event = latest
        MODEL_EVENT_APPLIED.set(latest)
        return True

    async def _notice_moved(self) -> bool:
        try:
            notice = await self.state.cache.get(registry.NOTICE_KEY)
        except Exception:  # the periodic re-read covers a cache outage
            return False
        moved = notice is not None and notice != self.notice
        self.notice = notice
        return moved

    async def tick(self) -> None:
        """One pass: follow the registry, then whichever rounds are due."""
        settings = self.state.settings
        now = time.monotonic()
        if await self._notice_moved() or now - self.last_read >= settings.model_reread_seconds:
            await self.sync()
        serving = self.state.serving
        if serving is None:
            return
        if serving.shadow is not None and now - self.last_shadow >= settings.shadow_seconds:
            self.last_shadow = now
            await self.shadow_round(serving.shadow)
        if serving.canary is not None and now - self.last_guard >= settings.canary_check_seconds:
            self.last_guard = now
            await self.guard_round(serving)
        if now - self.last_drift >= settings.drift_seconds:
            self.last_drift = now
            await self.drift_round(serving.live)

    async def shadow_round(self, shadow: ModelBundle) -> int:
        """Shadow-score what is waiting, in batches, until nothing is (or another worker is)."""
        total = 0
        async with self.state.sessionmaker() as session, _round(session, _SHADOW_LOCK) as mine:
            if not mine:
                return 0
            assigned = (await registry.assignments(session)).get("shadow")
            if assigned is None or assigned.model_id != shadow.model_id:
                return 0
            since = assigned.since
            if self.shadow_cursor is not None and self.shadow_cursor[0] == shadow.model_id:
                since = max(since, self.shadow_cursor[1])
            while True:
                written, last = await model_service.shadow_sweep(session, shadow, since)
                total += written
                if last is not None:
                    since = max(since, last - model_service.SHADOW_LATE_COMMIT)
                    self.shadow_cursor = (shadow.model_id, since)
                if written < model_service.SHADOW_BATCH:
                    break
        if total:
            SHADOW_SCORED.inc(total)
        return total

    async def guard_round(self, serving: ServingModels) -> str | None:
        """Roll the canary back when it is unhealthy; the reason, or None."""
        canary = serving.canary
        if canary is None:
            return None
        stats = serving.canary_stats
        async with self.state.sessionmaker() as session, _round(session, _GUARD_LOCK) as mine:
            if not mine:
                return None
            assigned = (await registry.assignments(session)).get("canary")
            if assigned is None or assigned.model_id != canary.model_id:
                return None
            window = timedelta(seconds=self.state.settings.canary_window_seconds)
            since = max(assigned.since, datetime.now(UTC) - window)
            reason = await model_service.canary_verdict(
                session,
                serving.live,
                canary,
                since,
                requests=stats.requests,
                errors=stats.errors,
                thresholds=self.thresholds,
            )
            if reason is None:
                return None
            event = await registry.set_canary(
                session,
                self.models_dir,
                None,
                actor=GUARD_ACTOR,
                action="canary_auto_rollback",
                reason=f"{canary.model_id}: {reason}",
            )
            await session.commit()
        log.warning("canary %s rolled back automatically: %s", canary.model_id, reason)
        CANARY_ROLLBACKS.labels(canary.model_id).inc()
        await registry.notify(self.state.cache, event.id)
        await self.sync()
        return reason

    async def drift_round(self, live: ModelBundle) -> None:
        """Refresh the PSI gauges of the live model over the drift window."""
        if live.reference is None:
            return
        async with self.state.sessionmaker() as session, _round(session, _DRIFT_LOCK) as mine:
            if not mine:
                return
            report = await model_service.drift(session, live, self.state.settings.drift_window)
        if report.n == 0:
            return
        if report.score_psi is not None:
            MODEL_SCORE_PSI.labels(live.model_id).set(report.score_psi)
        for name, value in report.features.items():
            if value is not None:
                MODEL_FEATURE_PSI.labels(live.model_id, name).set(value)

    async def run(self) -> None:
        """Tick forever; an error in one pass is logged and the next pass goes on."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # A registry outage fails every pass: one line (with the traceback) per
                # interval and kind, with a count, rather than one per poll.
                throttle.log(
                    log,
                    logging.ERROR,
                    f"model_supervisor:{type(error).__name__}",
                    "model supervisor pass failed",
                    exc_info=error,
                )
            await asyncio.sleep(self.state.settings.model_poll_seconds)


async def start(state: AppState) -> asyncio.Task[None]:
    """Apply the registry's assignments now, then follow them in the background."""
    default = state.serving.live if state.serving is not None else state.bundle
    supervisor = ModelSupervisor(state, default)
    try:
        await supervisor.sync()
    except Exception:  # an unreachable registry at start: serve the default, retry later
        log.exception("model registry not read at start; serving %s", default.model_id)
    return asyncio.create_task(supervisor.run(), name="model-supervisor")


async def stop(task: asyncio.Task[None]) -> None:
    """Stop the supervisor task."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
