"""Webhook endpoints, the event outbox, deliveries and their attempts."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from b2bscore.kit.db import Base
from b2bscore.tenants.models import JSONColumn, UTCDateTime, new_id, utcnow


def new_event_id() -> str:
    """A Standard Webhooks message id: `msg_` and 32 random hex digits."""
    return f"msg_{secrets.token_hex(16)}"


class WebhookEndpoint(Base):
    """A URL of a tenant that receives the events it subscribed to, signed."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        sa.Index("ix_webhook_endpoints_tenant_mode", "tenant_id", "mode"),
        sa.CheckConstraint("mode IN ('test', 'live')", name="ck_webhook_endpoints_mode"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_webhook_endpoints_tenant_id")
    )
    mode: Mapped[str] = mapped_column(sa.String(8))
    url: Mapped[str] = mapped_column(sa.String(2048))
    description: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    event_types: Mapped[list[str]] = mapped_column(JSONColumn)
    status: Mapped[str] = mapped_column(sa.String(16), default="enabled")
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The signing secret, AES-256-GCM under the data keyring (never stored in clear).
    secret_key_id: Mapped[str] = mapped_column(sa.String(64))
    secret_nonce: Mapped[bytes] = mapped_column(sa.LargeBinary)
    secret_ciphertext: Mapped[bytes] = mapped_column(sa.LargeBinary)
    # The secret before the last rotation, still signing until previous_expires_at.
    previous_key_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    previous_nonce: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    previous_ciphertext: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    previous_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Event(Base):
    """One event of the outbox, written in the same transaction as the change behind it."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_tenant_mode_created", "tenant_id", "mode", "created_at"),
        # A company's alerts (ordering key = SIREN) of one tenant and mode, newest first.
        sa.Index(
            "ix_events_tenant_mode_key_created", "tenant_id", "mode", "ordering_key", "created_at"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True, default=new_event_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_events_tenant_id")
    )
    mode: Mapped[str] = mapped_column(sa.String(8))
    type: Mapped[str] = mapped_column(sa.String(64))
    # Deliveries of events with the same key reach an endpoint in order (a SIREN, a batch).
    ordering_key: Mapped[str] = mapped_column(sa.String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One event owed to one endpoint: pending until delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        sa.Index(
            "ix_webhook_deliveries_queue", "endpoint_id", "ordering_key", "status", "created_at"
        ),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(sa.String(36))
    endpoint_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey(
            "webhook_endpoints.id", name="fk_webhook_deliveries_endpoint_id", ondelete="CASCADE"
        ),
    )
    event_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("events.id", name="fk_webhook_deliveries_event_id")
    )
    ordering_key: Mapped[str] = mapped_column(sa.String(64))
    # pending, succeeded, failed (gave up; can be redelivered on demand)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, as the endpoint answered it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        sa.Index("ix_webhook_attempts_endpoint_at", "endpoint_id", "attempted_at"),
        sa.Index("ix_webhook_attempts_delivery", "delivery_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey(
            "webhook_deliveries.id", name="fk_webhook_attempts_delivery_id", ondelete="CASCADE"
        ),
    )
    endpoint_id: Mapped[str] = mapped_column(sa.String(36))
    tenant_id: Mapped[str] = mapped_column(sa.String(36))
    event_id: Mapped[str] = mapped_column(sa.String(40))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # succeeded, retry (will be tried again), failed (this delivery gave up)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    response_excerpt: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
