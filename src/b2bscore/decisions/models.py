"""The audit row: one per answered decision, append-only and chained per tenant and mode."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from b2bscore.kit.db import Base
from b2bscore.tenants.models import JSONColumn, UTCDateTime, new_id

CENT = Decimal("0.01")


class Money(TypeDecorator[Decimal]):
    """EUR amounts, exact on every backend.

    NUMERIC(18,2) on PostgreSQL; text on SQLite, whose numeric affinity would go through
    binary floating point.
    """

    impl = sa.Numeric(18, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """Text on SQLite, NUMERIC elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(40))
        return dialect.type_descriptor(sa.Numeric(18, 2))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        """Cents exactly; refuses floats so that no rounding sneaks in."""
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, not {type(value).__name__}")
        quantized = value.quantize(CENT)
        if quantized != value:
            raise ValueError(f"money has more than 2 decimals: {value}")
        return str(quantized) if dialect.name == "sqlite" else quantized

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Decimal with exactly two places."""
        if value is None:
            return None
        return Decimal(str(value)).quantize(CENT)


class Decision(Base):
    """One answered scoring request, as it was decided."""

    __tablename__ = "decisions"
    __table_args__ = (
        # One chain per tenant and mode: test and live never share a sequence.
        sa.UniqueConstraint("tenant_id", "mode", "seq", name="uq_decisions_tenant_mode_seq"),
        # Per mode: a test request and a live one never share an idempotency key.
        sa.UniqueConstraint(
            "tenant_id",
            "mode",
            "idempotency_key",
            name="uq_decisions_tenant_mode_idempotency_key",
        ),
        sa.Index("ix_decisions_tenant_created_at", "tenant_id", "created_at"),
        sa.Index("ix_decisions_tenant_siren", "tenant_id", "siren"),
        sa.CheckConstraint("seq >= 1", name="ck_decisions_seq_positive"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    # Indexed through the leading column of every composite index above.
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_decisions_tenant_id")
    )
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The key that asked; kept when the key is later revoked.
    api_key_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("api_keys.id", name="fk_decisions_api_key_id"), nullable=True
    )
    mode: Mapped[str] = mapped_column(sa.String(8))

    siren: Mapped[str] = mapped_column(sa.String(9))
    product: Mapped[str] = mapped_column(sa.String(64))
    requested_amount: Mapped[Decimal] = mapped_column(Money())
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSONColumn)

    features: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    model_id: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    # Text, exactly as the service gave it: repr() of a float reads back as the very
    # same double, which replay compares bit for bit; NUMERIC(10,8) would round it.
    probability_of_default: Mapped[str] = mapped_column(sa.String(32))
    score: Mapped[int] = mapped_column(sa.Integer)
    grade: Mapped[str] = mapped_column(sa.String(8))
    decision: Mapped[str] = mapped_column(sa.String(16))
    proposed_limit: Mapped[Decimal] = mapped_column(Money())
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONColumn)
    sources: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    degraded: Mapped[bool] = mapped_column(sa.Boolean)
    latency_ms: Mapped[float] = mapped_column(sa.Float)

    # Purged (set to NULL) after retention; the digest stays in the chain.
    payload_ciphertext: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    payload_nonce: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    payload_key_id: Mapped[str] = mapped_column(sa.String(64))
    payload_digest: Mapped[str] = mapped_column(sa.String(64))

    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    row_hash: Mapped[str] = mapped_column(sa.String(64))
    # Id of the HMAC key that linked the row; NULL on rows written before revision 0002,
    # which keep their unkeyed SHA-256 link (decisions.chain explains both rules).
    chain_key_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)

    @property
    def probability_of_default_float(self) -> float:
        """The probability of default as the model's float."""
        return float(self.probability_of_default)


class LateCommit(Base):
    """An audit row that committed after its request had been answered 503 (insert-only).

    The decision row itself never changes; this note says that nobody was told about it,
    so that an auditor does not take it for an answered decision.
    """

    __tablename__ = "late_commits"
    __table_args__ = (sa.Index("ix_late_commits_tenant_id", "tenant_id"),)

    decision_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey("decisions.id", name="fk_late_commits_decision_id"),
        primary_key=True,
    )
    tenant_id: Mapped[str] = mapped_column(sa.String(36))
    mode: Mapped[str] = mapped_column(sa.String(8))
    noted_at: Mapped[datetime] = mapped_column(UTCDateTime())
