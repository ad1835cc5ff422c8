"""The registry's tables: which bundle plays which role, the history of changes, shadows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from b2bscore.kit.db import Base
from b2bscore.tenants.models import JSONColumn, UTCDateTime

ROLES = ("live", "shadow", "canary")


class ModelAssignment(Base):
    """The bundle currently playing one role; one row per role, absent when unassigned."""

    __tablename__ = "model_assignments"

    role: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    model_id: Mapped[str] = mapped_column(sa.String(128))
    version: Mapped[str] = mapped_column(sa.String(64))
    manifest_sha256: Mapped[str] = mapped_column(sa.String(64))
    percent: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    tenants: Mapped[list[str] | None] = mapped_column(JSONColumn, nullable=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    changed_by: Mapped[str] = mapped_column(sa.String(200))
    # The event that made this assignment: a reader that has seen event N is up to date.
    event_id: Mapped[int] = mapped_column(sa.BigInteger)


class ModelEvent(Base):
    """One change of role (promotion, rollback, shadow, canary), insert-only, hash-chained."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(32))
    role: Mapped[str] = mapped_column(sa.String(16))
    from_model: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    to_model: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    row_hash: Mapped[str] = mapped_column(sa.String(64))


class ShadowScore(Base):
    """What the shadow model said about a decision, on the decision's own feature vector."""

    __tablename__ = "shadow_scores"

    decision_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey("decisions.id", name="fk_shadow_scores_decision_id"),
        primary_key=True,
    )
    tenant_id: Mapped[str] = mapped_column(sa.String(36))
    model_id: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    probability_of_default: Mapped[str] = mapped_column(sa.String(32))
    score: Mapped[int] = mapped_column(sa.Integer)
    grade: Mapped[str] = mapped_column(sa.String(8))
    decision: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
