"""Alembic environment: runs the migrations with the async engine of the service."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import b2bscore.books.models
import b2bscore.decisions.models
import b2bscore.model.models
import b2bscore.outcomes.models
import b2bscore.portfolio.models
import b2bscore.tenants.models
import b2bscore.webhooks.models  # noqa: F401  (registers the tables on Base.metadata)
from b2bscore.kit.db import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


def run_migrations_online() -> None:
    """Run every pending migration on the configured database."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    asyncio.run(_run_async(url))


run_migrations_online()
