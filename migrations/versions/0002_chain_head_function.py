"""The chain lock and the chain head in one round trip, for the audit writer's batches.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# VOLATILE on purpose: in READ COMMITTED each statement of a volatile function takes a new
# snapshot, so the head is read after the lock is granted and sees every row the lock's
# previous holder committed. (One SELECT calling the lock function and reading the head
# would use a snapshot taken before the lock, and could fork the chain.)
CHAIN_HEAD_FUNCTION = """
CREATE FUNCTION decisions_lock_chain_head(lock_space integer, tenant varchar)
RETURNS TABLE (head_seq bigint, head_hash varchar)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_space, hashtext(tenant));
    RETURN QUERY
        SELECT d.seq, d.row_hash::varchar
        FROM decisions AS d
        WHERE d.tenant_id = tenant
        ORDER BY d.seq DESC
        LIMIT 1;
END;
$$
"""


def upgrade() -> None:
    """On PostgreSQL, create the function the audit writer calls under its chain lock."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CHAIN_HEAD_FUNCTION)


def downgrade() -> None:
    """Drop the function (the writer of revision 0001 locks and reads in two statements)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS decisions_lock_chain_head(integer, varchar)")
