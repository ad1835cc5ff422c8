"""Watched companies and batches of score requests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from b2bscore.decisions.models import Money
from b2bscore.kit.db import Base
from b2bscore.tenants.models import JSONColumn, UTCDateTime, new_id, utcnow


class MonitoredCompany(Base):
    """A company a tenant watches: what it looked like at the last check."""

    __tablename__ = "monitored_companies"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "mode", "siren", name="uq_monitored_companies_siren"),
        sa.Index("ix_monitored_companies_due", "mode", "last_checked_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_monitored_companies_tenant_id")
    )
    mode: Mapped[str] = mapped_column(sa.String(8))
    # The key that asked: the monitoring decisions are recorded under it.
    api_key_id: Mapped[str] = mapped_column(sa.String(36))
    siren: Mapped[str] = mapped_column(sa.String(9))
    follows_decision_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    product: Mapped[str] = mapped_column(sa.String(32))
    requested_amount: Mapped[Decimal] = mapped_column(Money())
    rules: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    external_reference: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last state seen: what the next check compares with.
    last_decision_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    last_score: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    last_grade: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    last_probability_of_default: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    last_reasons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONColumn, nullable=True)
    last_active: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    # Ids of the collective-proceedings announcements already reported.
    known_proceedings: Mapped[list[str] | None] = mapped_column(JSONColumn, nullable=True)


class MonitoringRules(Base):
    """A tenant's default monitoring rules in one mode (a company may carry its own)."""

    __tablename__ = "monitoring_rules"

    tenant_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey("tenants.id", name="fk_monitoring_rules_tenant_id"),
        primary_key=True,
    )
    mode: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Batch(Base):
    """A file of score requests decided in the background, row by row."""

    __tablename__ = "batches"
    __table_args__ = (sa.Index("ix_batches_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_batches_tenant_id")
    )
    mode: Mapped[str] = mapped_column(sa.String(8))
    api_key_id: Mapped[str] = mapped_column(sa.String(36))
    # queued, running, completed
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    format: Mapped[str] = mapped_column(sa.String(8))
    # The uploaded file until the worker has split it into rows.
    source: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    total_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    invalid_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    decided_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_rows: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BatchRow(Base):
    """One line of a batch file: its request, then its decision or its error."""

    __tablename__ = "batch_rows"
    __table_args__ = (sa.Index("ix_batch_rows_status", "batch_id", "status", "row_number"),)

    batch_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey("batches.id", name="fk_batch_rows_batch_id", ondelete="CASCADE"),
        primary_key=True,
    )
    row_number: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    # pending, decided, invalid (bad input), failed (no decision could be made)
    status: Mapped[str] = mapped_column(sa.String(16))
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONColumn, nullable=True)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONColumn, nullable=True)
    decision_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONColumn, nullable=True)
    # Attempts at deciding the row that failed (not bad input: the audit store refused,
    # an unexpected error); a pending row with retry_at waits until then.
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default=sa.text("0"))
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
