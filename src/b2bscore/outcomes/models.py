"""What became of a decided credit: repaid, defaulted or written off."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from b2bscore.kit.db import Base
from b2bscore.tenants.models import UTCDateTime

OUTCOMES = ("repaid", "default", "written_off")
# Outcomes that count as a default when measuring a model.
BAD_OUTCOMES = frozenset({"default", "written_off"})


class DecisionOutcome(Base):
    """The one recorded outcome of a decision (insert-only: a second, different one is 409)."""

    __tablename__ = "decision_outcomes"
    __table_args__ = (sa.Index("ix_decision_outcomes_tenant", "tenant_id"),)

    decision_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey("decisions.id", name="fk_decision_outcomes_decision_id"),
        primary_key=True,
    )
    tenant_id: Mapped[str] = mapped_column(sa.String(36))
    mode: Mapped[str] = mapped_column(sa.String(8))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    outcome_date: Mapped[date] = mapped_column(sa.Date)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    api_key_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
