"""Tenants and their API keys; plus the portable column types the audit store shares."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator, TypeEngine

from b2bscore.kit.db import Base

# JSONB on PostgreSQL (indexable, compact), plain JSON text on SQLite.
JSONColumn: TypeEngine[Any] = sa.JSON().with_variant(JSONB(), "postgresql")


def new_id() -> str:
    """A random UUID as the 36-character string used for every primary key."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no timezone type and hands back naive values: store UTC without the
    offset and attach UTC on the way out, so callers only ever see aware datetimes.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; normalize to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use datetime.now(UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always aware, always UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Tenant(Base):
    """A lender using the API; every decision and key belongs to exactly one."""

    __tablename__ = "tenants"
    __table_args__ = (sa.UniqueConstraint("name", name="uq_tenants_name"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # None: the service-wide default from settings.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    # Live keys score with no live provider configured only when this is set.
    allow_partial_data: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant", lazy="raise")


class ApiKey(Base):
    """One API key: only its SHA-256 is stored, the plaintext is shown once at creation."""

    __tablename__ = "api_keys"
    # Authentication looks a key up by its hash on every cache miss.
    __table_args__ = (
        sa.Index("ix_api_keys_key_hash", "key_hash", unique=True),
        sa.CheckConstraint("mode IN ('test', 'live')", name="ck_api_keys_mode"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_api_keys_tenant_id"), index=True
    )
    mode: Mapped[str] = mapped_column(sa.String(8))
    prefix: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONColumn)
    name: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys", lazy="raise")
