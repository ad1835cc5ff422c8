"""Test and live walls: idempotency keys per mode, partial-data flag, late commits.

- The idempotency key of a decision is unique per (tenant, mode, key): a live request
  never meets the decision a test request recorded under the same key, nor the reverse.
- `tenants.allow_partial_data`: a live key may score with no live provider configured
  only when its tenant allows it (`b2bscore keys set-partial-data`).
- `late_commits`: insert-only notes of audit rows that committed after their request had
  been answered 503 (the rows themselves never change).

Revision ID: 0003
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

LATE_COMMITS_APPEND_ONLY = """
CREATE FUNCTION late_commits_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'late_commits is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def _swap_idempotency_constraint(old: str, new: str, columns: list[str]) -> None:
    # On SQLite a table constraint cannot be dropped in place: batch mode copies the
    # table; on PostgreSQL it is a plain ALTER TABLE.
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(new, columns)


def upgrade() -> None:
    """Per-mode idempotency keys, the partial-data flag and the late-commit notes."""
    _swap_idempotency_constraint(
        "uq_decisions_tenant_idempotency_key",
        "uq_decisions_tenant_mode_idempotency_key",
        ["tenant_id", "mode", "idempotency_key"],
    )
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("allow_partial_data", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "late_commits",
        sa.Column(
            "decision_id",
            sa.String(36),
            sa.ForeignKey("decisions.id", name="fk_late_commits_decision_id"),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("noted_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_late_commits_tenant_id", "late_commits", ["tenant_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(LATE_COMMITS_APPEND_ONLY)
        op.execute(
            "CREATE TRIGGER late_commits_append_only BEFORE UPDATE OR DELETE ON late_commits "
            "FOR EACH ROW EXECUTE FUNCTION late_commits_append_only()"
        )
        op.execute(
            "CREATE TRIGGER late_commits_no_truncate BEFORE TRUNCATE ON late_commits "
            "FOR EACH STATEMENT EXECUTE FUNCTION late_commits_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER late_commits_no_{operation.lower()} BEFORE {operation} "
                "ON late_commits BEGIN "
                f"SELECT RAISE(ABORT, 'late_commits is append-only: {operation} refused'); END"
            )


def downgrade() -> None:
    """Back to one idempotency key per tenant (fails if both modes used the same key)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS late_commits_no_truncate ON late_commits")
        op.execute("DROP TRIGGER IF EXISTS late_commits_append_only ON late_commits")
        op.execute("DROP FUNCTION IF EXISTS late_commits_append_only()")
    op.drop_index("ix_late_commits_tenant_id", table_name="late_commits")
    op.drop_table("late_commits")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("allow_partial_data")
    _swap_idempotency_constraint(
        "uq_decisions_tenant_mode_idempotency_key",
        "uq_decisions_tenant_idempotency_key",
        ["tenant_id", "idempotency_key"],
    )
