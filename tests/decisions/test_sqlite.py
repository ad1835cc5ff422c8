"""The migration and the audit store on SQLite (the embedded default), and downgrades."""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from b2bscore.decisions.chain import verify_chain
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.decisions.service import IdempotencyConflict, open_payloads, record_decision
from b2bscore.kit.db import (
    alembic_config,
    create_engine,
    create_sessionmaker,
    upgrade_database,
    upgrade_database_async,
)
from b2bscore.tenants.service import authenticate, create_api_key, create_tenant
from tests.backends import database_url
from tests.decisions.factories import make_record

TABLES = {"tenants", "api_keys", "decisions"}


async def test_audit_store_on_sqlite(
    tmp_path: Path, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'b2bscore.db'}"
    await upgrade_database_async(url)
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            tenant = await create_tenant(session, "embedded")
            _, key = await create_api_key(session, tenant, "test", ["score:write"])
            await session.commit()
            principal = await authenticate(session, key)
            assert principal is not None
            assert principal.tenant_id == tenant.id
            tenant_id = tenant.id

        async def write(i: int) -> None:
            async with create_sessionmaker(engine)() as session:
                await record_decision(
                    session,
                    record=make_record(tenant_id, score=i),
                    keyring=keyring,
                    chain_keys=chain_keys,
                )

        await asyncio.gather(*(write(i) for i in range(10)))
        async with create_sessionmaker(engine)() as session:
            first = await record_decision(
                session,
                record=make_record(tenant_id, idempotency_key="x"),
                keyring=keyring,
                chain_keys=chain_keys,
            )
            first_id = first.id
            with pytest.raises(IdempotencyConflict) as caught:
                await record_decision(
                    session,
                    record=make_record(tenant_id, idempotency_key="x"),
                    keyring=keyring,
                    chain_keys=chain_keys,
                )
            assert caught.value.decision_id == first_id

        async with create_sessionmaker(engine)() as session:
            row = await DecisionRepository(session).get(tenant_id, first_id)
            assert row is not None
            assert row.seq == 11
            assert row.created_at.tzinfo is not None
            assert row.requested_amount == Decimal("25000.00")
            assert row.proposed_limit == Decimal("20000.00")
            assert open_payloads(row, keyring) is not None
            result = await verify_chain(session, chain_keys=chain_keys)
            assert result.ok
            assert result.rows == 11
            page = await DecisionRepository(session).list(
                tenant_id, created_from=row.created_at, limit=5
            )
            assert [d.id for d in page] == [first_id]
    finally:
        await engine.dispose()


def test_downgrade_and_upgrade_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade_database(url)
    command.downgrade(alembic_config(url), "base")
    upgrade_database(url)
    engine = create_engine(url)

    async def tables() -> set[str]:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        await engine.dispose()
        return names

    assert asyncio.run(tables()) >= TABLES


async def test_downgrade_and_upgrade_on_postgresql(postgres_admin_dsn: str) -> None:
    name = f"b2bscore_mig_{secrets.token_hex(4)}"
    admin = create_async_engine(
        database_url(postgres_admin_dsn, "postgres"), isolation_level="AUTOCOMMIT"
    )
    url = database_url(postgres_admin_dsn, name)
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        await upgrade_database_async(url)
        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        await upgrade_database_async(url)
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                triggers = (
                    await connection.execute(
                        text(
                            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'decisions'::regclass "
                            "AND NOT tgisinternal ORDER BY tgname"
                        )
                    )
                ).scalars()
                assert list(triggers) == ["decisions_append_only", "decisions_no_truncate"]
        finally:
            await engine.dispose()
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
