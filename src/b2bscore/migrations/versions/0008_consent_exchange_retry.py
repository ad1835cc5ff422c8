"""Consents: a code exchange that failed is retried (last_error, code_expires_at).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add consents.last_error and consents.code_expires_at."""
    with op.batch_alter_table("consents") as batch:
        batch.add_column(sa.Column("last_error", sa.String(200), nullable=True))
        batch.add_column(sa.Column("code_expires_at", TIMESTAMP, nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("consents") as batch:
        batch.drop_column("code_expires_at")
        batch.drop_column("last_error")
