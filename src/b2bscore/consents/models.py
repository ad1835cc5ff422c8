"""Consents, their insert-only audit trail, and the tenants' redirect allow-list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from b2bscore.kit.db import Base
from b2bscore.tenants.models import JSONColumn, UTCDateTime, new_id

STATUSES = ("pending", "active", "refused", "expired", "revoked")


class Consent(Base):
    """One company's consent at one bank, asked for by one tenant in one mode.

    Tokens (the PKCE verifier while pending, then access and refresh tokens) and the synced
    snapshot are AES-GCM ciphertexts under the data keyring; both are purged (set NULL)
    on revocation and after the retention that follows expiry.
    """

    __tablename__ = "consents"
    __table_args__ = (
        # The score path's one read: the freshest active snapshot of a company.
        sa.Index("ix_consents_lookup", "tenant_id", "mode", "siren", "status"),
        sa.Index("ix_consents_state", "state_hash", unique=True),
        sa.Index("ix_consents_due", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_consents_tenant_id")
    )
    mode: Mapped[str] = mapped_column(sa.String(8))
    siren: Mapped[str] = mapped_column(sa.String(9))
    bank_id: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    requested_scopes: Mapped[list[str]] = mapped_column(JSONColumn)
    granted_scopes: Mapped[list[str]] = mapped_column(JSONColumn, default=list)
    accounts: Mapped[list[str]] = mapped_column(JSONColumn, default=list)  # tokens only
    redirect_uri: Mapped[str] = mapped_column(sa.String(2048))
    # sha256 of the OAuth state: single use (cleared when used), bound to this consent.
    state_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    state_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(sa.String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expiring_notified: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Why the last exchange or sync with the bank failed (no secret, at most 200 chars);
    # cleared when one succeeds.
    last_error: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    # While pending after a failed code exchange: until when the bank's code is worth
    # another try (the exchange job retries until then).
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    tokens_key_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    tokens_nonce: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    tokens_ciphertext: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    snapshot_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    snapshot_key_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    snapshot_nonce: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    snapshot_ciphertext: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)


class ConsentEvent(Base):
    """One change of a consent (insert-only): who, when, what became of it, which scopes."""

    __tablename__ = "consent_events"
    __table_args__ = (sa.Index("ix_consent_events_consent", "consent_id", "at"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    consent_id: Mapped[str] = mapped_column(sa.String(36))
    tenant_id: Mapped[str] = mapped_column(sa.String(36))
    mode: Mapped[str] = mapped_column(sa.String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # An API key id, "psu" (the company's user at the bank), "bank" or "system".
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16))
    scopes: Mapped[list[str]] = mapped_column(JSONColumn)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONColumn, default=dict)


class ConsentRedirect(Base):
    """A redirect_uri a tenant allows for its consents (exact match), per mode."""

    __tablename__ = "consent_redirect_uris"

    tenant_id: Mapped[str] = mapped_column(
        sa.String(36),
        sa.ForeignKey("tenants.id", name="fk_consent_redirect_uris_tenant_id"),
        primary_key=True,
    )
    mode: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    uri: Mapped[str] = mapped_column(sa.String(2048), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
