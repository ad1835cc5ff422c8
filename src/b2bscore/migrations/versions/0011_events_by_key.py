"""Events by ordering key: a tenant's alerts about one company read without a scan.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index events on (tenant_id, mode, ordering_key, created_at)."""
    op.create_index(
        "ix_events_tenant_mode_key_created",
        "events",
        ["tenant_id", "mode", "ordering_key", "created_at"],
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_events_tenant_mode_key_created", table_name="events")
