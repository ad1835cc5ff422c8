"""Consents: live open-banking consents, their audit trail, redirect allow-lists.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    """Create consents, consent_events and consent_redirect_uris."""
    op.create_table(
        "consents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_consents_tenant_id"),
            nullable=False,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("siren", sa.String(9), nullable=False),
        sa.Column("bank_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_scopes", JSON, nullable=False),
        sa.Column("granted_scopes", JSON, nullable=False),
        sa.Column("accounts", JSON, nullable=False),
        sa.Column("redirect_uri", sa.String(2048), nullable=False),
        sa.Column("state_hash", sa.String(64), nullable=True),
        sa.Column("state_expires_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(36), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("activated_at", TIMESTAMP, nullable=True),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("expiring_notified", sa.Boolean(), nullable=False),
        sa.Column("access_expires_at", TIMESTAMP, nullable=True),
        sa.Column("last_synced_at", TIMESTAMP, nullable=True),
        sa.Column("purge_after", TIMESTAMP, nullable=True),
        sa.Column("tokens_key_id", sa.String(64), nullable=True),
        sa.Column("tokens_nonce", sa.LargeBinary(), nullable=True),
        sa.Column("tokens_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("snapshot_at", TIMESTAMP, nullable=True),
        sa.Column("snapshot_key_id", sa.String(64), nullable=True),
        sa.Column("snapshot_nonce", sa.LargeBinary(), nullable=True),
        sa.Column("snapshot_ciphertext", sa.LargeBinary(), nullable=True),
    )
    op.create_index("ix_consents_lookup", "consents", ["tenant_id", "mode", "siren", "status"])
    op.create_index("ix_consents_state", "consents", ["state_hash"], unique=True)
    op.create_index("ix_consents_due", "consents", ["status", "expires_at"])
    op.create_table(
        "consent_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("consent_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("detail", JSON, nullable=False),
    )
    op.create_index("ix_consent_events_consent", "consent_events", ["consent_id", "at"])
    op.create_table(
        "consent_redirect_uris",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_consent_redirect_uris_tenant_id"),
            primary_key=True,
        ),
        sa.Column("mode", sa.String(8), primary_key=True),
        sa.Column("uri", sa.String(2048), primary_key=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Insert-only: the audit trail of consents is never rewritten.
        op.execute(
            "CREATE RULE consent_events_no_update AS ON UPDATE TO consent_events DO INSTEAD NOTHING"
        )
        op.execute(
            "CREATE RULE consent_events_no_delete AS ON DELETE TO consent_events DO INSTEAD NOTHING"
        )


def downgrade() -> None:
    """Drop the consent tables."""
    op.drop_table("consent_redirect_uris")
    op.drop_index("ix_consent_events_consent", table_name="consent_events")
    op.drop_table("consent_events")
    op.drop_index("ix_consents_due", table_name="consents")
    op.drop_index("ix_consents_state", table_name="consents")
    op.drop_index("ix_consents_lookup", table_name="consents")
    op.drop_table("consents")
