"""Job engine schema (procrastinate), webhooks and the event outbox, monitoring, batches.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
MONEY = sa.Numeric(18, 2).with_variant(sa.String(40), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)

_TYPE = re.compile(r"CREATE TYPE (?:public\.)?(procrastinate_\w+)")
PROCRASTINATE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


def _apply_procrastinate_schema() -> None:
    """procrastinate's own schema (tables, functions, triggers), as the installed version ships it.

    The engine upgrades its schema with its own SQL migrations: a procrastinate upgrade
    that ships one gets an Alembic migration that applies it (see docs/JOBS.md).
    """
    from procrastinate.schema import SchemaManager
    from sqlalchemy.util import await_only

    bind = op.get_bind()
    exists = bind.execute(sa.text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).scalar()
    if exists:
        return
    # Many statements in one script: asyncpg's simple-query path takes them as one string,
    # where a prepared statement (what SQLAlchemy would send) takes a single one.
    driver = bind.connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
    await_only(driver.execute(SchemaManager.get_schema()))


def upgrade() -> None:
    """Create the tables of webhooks, events, monitoring and batches; the job schema on PG."""
    if op.get_bind().dialect.name == "postgresql":
        _apply_procrastinate_schema()

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_webhook_endpoints_tenant_id"),
            nullable=False,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("event_types", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disabled_reason", sa.String(300), nullable=True),
        sa.Column("disabled_at", TIMESTAMP, nullable=True),
        sa.Column("secret_key_id", sa.String(64), nullable=False),
        sa.Column("secret_nonce", sa.LargeBinary, nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("previous_key_id", sa.String(64), nullable=True),
        sa.Column("previous_nonce", sa.LargeBinary, nullable=True),
        sa.Column("previous_ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("previous_expires_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("mode IN ('test', 'live')", name="ck_webhook_endpoints_mode"),
    )
    op.create_index("ix_webhook_endpoints_tenant_mode", "webhook_endpoints", ["tenant_id", "mode"])
    op.create_table(
        "events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_events_tenant_id"),
            nullable=False,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("ordering_key", sa.String(64), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_events_tenant_mode_created", "events", ["tenant_id", "mode", "created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column(
            "endpoint_id",
            sa.String(36),
            sa.ForeignKey(
                "webhook_endpoints.id",
                name="fk_webhook_deliveries_endpoint_id",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column(
            "event_id",
            sa.String(40),
            sa.ForeignKey("events.id", name="fk_webhook_deliveries_event_id"),
            nullable=False,
        ),
        sa.Column("ordering_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
    )
    op.create_index(
        "ix_webhook_deliveries_queue",
        "webhook_deliveries",
        ["endpoint_id", "ordering_key", "status", "created_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "delivery_id",
            sa.String(36),
            sa.ForeignKey(
                "webhook_deliveries.id",
                name="fk_webhook_attempts_delivery_id",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("attempted_at", TIMESTAMP, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.String(300), nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("response_excerpt", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_webhook_attempts_endpoint_at", "webhook_attempts", ["endpoint_id", "attempted_at"]
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id"])

    op.create_table(
        "monitored_companies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_monitored_companies_tenant_id"),
            nullable=False,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=False),
        sa.Column("siren", sa.String(9), nullable=False),
        sa.Column("follows_decision_id", sa.String(36), nullable=True),
        sa.Column("product", sa.String(32), nullable=False),
        sa.Column("requested_amount", MONEY, nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("external_reference", sa.String(64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_checked_at", TIMESTAMP, nullable=True),
        sa.Column("last_decision_id", sa.String(36), nullable=True),
        sa.Column("last_score", sa.Integer, nullable=True),
        sa.Column("last_grade", sa.String(8), nullable=True),
        sa.Column("last_probability_of_default", sa.String(20), nullable=True),
        sa.Column("last_reasons", JSON, nullable=True),
        sa.Column("last_active", sa.Boolean, nullable=True),
        sa.Column("known_proceedings", JSON, nullable=True),
        sa.UniqueConstraint("tenant_id", "mode", "siren", name="uq_monitored_companies_siren"),
    )
    op.create_index(
        "ix_monitored_companies_due", "monitored_companies", ["mode", "last_checked_at"]
    )
    op.create_table(
        "monitoring_rules",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_monitoring_rules_tenant_id"),
            primary_key=True,
        ),
        sa.Column("mode", sa.String(8), primary_key=True),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.id", name="fk_batches_tenant_id"),
            nullable=False,
        ),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("source", sa.LargeBinary, nullable=True),
        sa.Column("total_rows", sa.Integer, nullable=False),
        sa.Column("invalid_rows", sa.Integer, nullable=False),
        sa.Column("decided_rows", sa.Integer, nullable=False),
        sa.Column("failed_rows", sa.Integer, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
    )
    op.create_index("ix_batches_tenant_created", "batches", ["tenant_id", "created_at"])
    op.create_table(
        "batch_rows",
        sa.Column(
            "batch_id",
            sa.String(36),
            sa.ForeignKey("batches.id", name="fk_batch_rows_batch_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("row_number", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", JSON, nullable=True),
        sa.Column("errors", JSON, nullable=True),
        sa.Column("decision_id", sa.String(36), nullable=True),
        sa.Column("result", JSON, nullable=True),
    )
    op.create_index("ix_batch_rows_status", "batch_rows", ["batch_id", "status", "row_number"])


def downgrade() -> None:
    """Drop what upgrade created (the job schema too, on PostgreSQL)."""
    for table in (
        "batch_rows",
        "batches",
        "monitoring_rules",
        "monitored_companies",
        "webhook_attempts",
        "webhook_deliveries",
        "events",
        "webhook_endpoints",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        for table in PROCRASTINATE_TABLES:
            op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        # The schema's functions and enum types too: an upgrade after a downgrade recreates
        # them, and would fail on the ones left behind.
        op.execute(
            """
            DO $$
            DECLARE item record;
            BEGIN
              FOR item IN SELECT p.oid::regprocedure AS name FROM pg_proc p
                  JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%'
              LOOP EXECUTE 'DROP FUNCTION IF EXISTS ' || item.name || ' CASCADE'; END LOOP;
            END $$;
            """
        )
        from procrastinate.schema import SchemaManager

        for type_name in sorted(set(_TYPE.findall(SchemaManager.get_schema()))):
            op.execute(f"DROP TYPE IF EXISTS {type_name} CASCADE")
