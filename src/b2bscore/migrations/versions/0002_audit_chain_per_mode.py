"""Keyed audit chains per tenant and mode; append-only triggers on SQLite too.

- `decisions.chain_key_id`: id of the HMAC key that linked the row. Rows written before
  this revision keep NULL and their unkeyed SHA-256 link, and stay verifiable under it;
  every row written after is keyed (decisions.chain explains both rules).
- One chain per (tenant, mode): the unique constraint moves from (tenant_id, seq) to
  (tenant_id, mode, seq). The first keyed row of a mode links to the last row of that
  mode written before, so old and new rows make one verifiable sequence.
- SQLite gets BEFORE UPDATE / BEFORE DELETE triggers that refuse any change but the
  retention purge (payload and nonce set to NULL), like the PostgreSQL trigger of 0001.

Revision ID: 0002
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: every column a change of which the SQLite trigger refuses.
_GUARDED_COLUMNS = (
    "id",
    "tenant_id",
    "seq",
    "created_at",
    "api_key_id",
    "mode",
    "siren",
    "product",
    "requested_amount",
    "idempotency_key",
    "request_hash",
    "request",
    "features",
    "model_id",
    "model_version",
    "probability_of_default",
    "score",
    "grade",
    "decision",
    "proposed_limit",
    "reasons",
    "sources",
    "degraded",
    "latency_ms",
    "payload_key_id",
    "payload_digest",
    "prev_hash",
    "row_hash",
    "chain_key_id",
)

_UNCHANGED = " AND ".join(f"NEW.{name} IS OLD.{name}" for name in _GUARDED_COLUMNS)

SQLITE_NO_UPDATE = f"""
CREATE TRIGGER decisions_append_only_update BEFORE UPDATE ON decisions
WHEN NOT (NEW.payload_ciphertext IS NULL AND NEW.payload_nonce IS NULL AND {_UNCHANGED})
BEGIN
    SELECT RAISE(ABORT, 'decisions is append-only: UPDATE refused');
END
"""

SQLITE_NO_DELETE = """
CREATE TRIGGER decisions_append_only_delete BEFORE DELETE ON decisions
BEGIN
    SELECT RAISE(ABORT, 'decisions is append-only: DELETE refused');
END
"""


def upgrade() -> None:
    """Add chain_key_id, chain per (tenant, mode), SQLite append-only triggers."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("chain_key_id", sa.String(64), nullable=True))
        batch.drop_constraint("uq_decisions_tenant_seq", type_="unique")
        batch.create_unique_constraint("uq_decisions_tenant_mode_seq", ["tenant_id", "mode", "seq"])
    if sqlite:
        # After the batch: SQLite's batch mode rebuilds the table, dropping its triggers.
        op.execute(SQLITE_NO_UPDATE)
        op.execute(SQLITE_NO_DELETE)


def downgrade() -> None:
    """Back to one unkeyed chain per tenant (refused while keyed rows exist)."""
    bind = op.get_bind()
    keyed = bind.execute(
        sa.text("SELECT count(*) FROM decisions WHERE chain_key_id IS NOT NULL")
    ).scalar_one()
    if keyed:
        # Dropping the column would strip the key id that their links need.
        raise RuntimeError(f"{keyed} keyed audit rows exist: revision 0002 cannot be undone")
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS decisions_append_only_update")
        op.execute("DROP TRIGGER IF EXISTS decisions_append_only_delete")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("uq_decisions_tenant_mode_seq", type_="unique")
        batch.create_unique_constraint("uq_decisions_tenant_seq", ["tenant_id", "seq"])
        batch.drop_column("chain_key_id")
