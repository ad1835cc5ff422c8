"""Model registry: live/shadow/canary assignments, model events, shadow scores, outcomes.

Revision ID: 0004
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
INSERT_ONLY = ("model_events", "shadow_scores", "decision_outcomes")

# History is evidence: what was live when, what a challenger said, what happened to a
# loan. None of it may be rewritten.
INSERT_ONLY_FUNCTION = """
CREATE FUNCTION model_insert_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is insert-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def upgrade() -> None:
    """Create the registry tables and, on PostgreSQL, their insert-only triggers."""
    op.create_table(
        "model_assignments",
        sa.Column("role", sa.String(16), primary_key=True),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("percent", sa.Integer, nullable=True),
        sa.Column("tenants", JSON, nullable=True),
        sa.Column("since", TIMESTAMP, nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("event_id", sa.BigInteger, nullable=False),
        sa.CheckConstraint("role IN ('live', 'shadow', 'canary')", name="ck_model_role"),
        sa.CheckConstraint("percent IS NULL OR percent BETWEEN 0 AND 100", name="ck_percent"),
    )
    op.create_table(
        "model_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("from_model", sa.String(128), nullable=True),
        sa.Column("to_model", sa.String(128), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "shadow_scores",
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("probability_of_default", sa.String(32), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("grade", sa.String(8), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name="fk_shadow_scores_decision_id"
        ),
    )
    op.create_table(
        "decision_outcomes",
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_date", sa.Date, nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name="fk_decision_outcomes_decision_id"
        ),
        sa.CheckConstraint(
            "outcome IN ('repaid', 'default', 'written_off')", name="ck_outcome_kind"
        ),
    )
    op.create_index("ix_decision_outcomes_tenant", "decision_outcomes", ["tenant_id"])
    # Drift windows, shadow sweeps and parity samples read decisions by time across tenants.
    op.create_index("ix_decisions_created_at", "decisions", ["created_at"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(INSERT_ONLY_FUNCTION)
        for table in INSERT_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_insert_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION model_insert_only()"
            )


def downgrade() -> None:
    """Drop everything this revision created."""
    if op.get_bind().dialect.name == "postgresql":
        for table in INSERT_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_insert_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS model_insert_only()")
    op.drop_index("ix_decisions_created_at", table_name="decisions")
    op.drop_index("ix_decision_outcomes_tenant", table_name="decision_outcomes")
    op.drop_table("decision_outcomes")
    op.drop_table("shadow_scores")
    op.drop_table("model_events")
    op.drop_table("model_assignments")
