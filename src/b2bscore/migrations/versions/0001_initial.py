"""Initial schema: tenants, API keys and the append-only audit store.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from the models: a migration must keep creating the
# schema of its own time.
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
# Exact text on SQLite, whose NUMERIC affinity would store binary floats.
MONEY = sa.Numeric(18, 2).with_variant(sa.String(40), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)

# Rows of decisions never change, except the retention purge, which may set the
# encrypted payload and its nonce to NULL and must leave every other column as it was.
APPEND_ONLY_FUNCTION = """
CREATE FUNCTION decisions_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Nested, not AND-ed: plpgsql does not promise short-circuit evaluation, and NEW
    -- is not a row in DELETE or statement-level TRUNCATE triggers.
    IF TG_OP = 'UPDATE' THEN
        IF NEW.payload_ciphertext IS NULL
           AND NEW.payload_nonce IS NULL
           AND (to_jsonb(NEW) - 'payload_ciphertext' - 'payload_nonce')
               = (to_jsonb(OLD) - 'payload_ciphertext' - 'payload_nonce')
        THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'decisions is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the retention purge may null payload_ciphertext/payload_nonce';
END;
$$
"""


def upgrade() -> None:
    """Create every table, index and, on PostgreSQL, the append-only triggers."""
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_api_keys_tenant_id"),
            nullable=False,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint("mode IN ('test', 'live')", name="ck_api_keys_mode"),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])

    op.create_table(
        "decisions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_decisions_tenant_id"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column(
            "api_key_id",
            sa.String(36),
            sa.ForeignKey("api_keys.id", name="fk_decisions_api_key_id"),
            nullable=True,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("siren", sa.String(9), nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("requested_amount", MONEY, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("request", JSON, nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("probability_of_default", sa.String(32), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("grade", sa.String(8), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("proposed_limit", MONEY, nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("sources", JSON, nullable=False),
        sa.Column("degraded", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("payload_ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("payload_nonce", sa.LargeBinary, nullable=True),
        sa.Column("payload_key_id", sa.String(64), nullable=False),
        sa.Column("payload_digest", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("tenant_id", "seq", name="uq_decisions_tenant_seq"),
        sa.UniqueConstraint(
            "tenant_id", "idempotency_key", name="uq_decisions_tenant_idempotency_key"
        ),
        sa.CheckConstraint("seq >= 1", name="ck_decisions_seq_positive"),
    )
    op.create_index("ix_decisions_tenant_created_at", "decisions", ["tenant_id", "created_at"])
    op.create_index("ix_decisions_tenant_siren", "decisions", ["tenant_id", "siren"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions "
            "FOR EACH ROW EXECUTE FUNCTION decisions_append_only()"
        )
        op.execute(
            "CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions "
            "FOR EACH STATEMENT EXECUTE FUNCTION decisions_append_only()"
        )


def downgrade() -> None:
    """Drop everything this revision created."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS decisions_no_truncate ON decisions")
        op.execute("DROP TRIGGER IF EXISTS decisions_append_only ON decisions")
        op.execute("DROP FUNCTION IF EXISTS decisions_append_only()")
    op.drop_index("ix_decisions_tenant_siren", table_name="decisions")
    op.drop_index("ix_decisions_tenant_created_at", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys")
    op.drop_index("ix_api_keys_key_hash", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
