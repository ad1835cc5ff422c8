"""The service's own PostgreSQL role: it records and reads decisions, and can do nothing else.

A throwaway login role is created in the test's database, granted through
`b2bscore db grant-app-role`, and then tries what an attacker holding the service's
database credentials would: change, delete, truncate, disable or drop the triggers.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from b2bscore.decisions.chain import verify_chain
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.models import Decision
from b2bscore.decisions.writer import AuditWriter
from b2bscore.kit.db import create_engine, create_sessionmaker
from tests.decisions.factories import make_record, new_tenant
from tests.security.conftest import admin_execute, asyncpg_dsn, fresh_database
from tests.security.test_audit_anchoring import run_cli


@dataclass
class Roles:
    """A database migrated by its owner, and the service's role on it."""

    owner_url: str
    app_url: str
    role: str
    env: dict[str, str]


@pytest.fixture
async def roles(postgres_admin_dsn: str, tmp_path: Path) -> AsyncIterator[Roles]:
    """A fresh database and a login role granted by the command, dropped afterwards."""
    role = f"b2b_app_{secrets.token_hex(4)}"
    await admin_execute(postgres_admin_dsn, f"CREATE ROLE {role} LOGIN")
    try:
        async with fresh_database(postgres_admin_dsn, "roles") as (_, owner_url):
            # The same server and database as the owner, TCP or Unix socket alike.
            app_url = (
                make_url(owner_url)
                .set(username=role, password=None)
                .render_as_string(hide_password=False)
            )
            env = {
                "B2BSCORE_DATABASE_URL": app_url,
                "B2BSCORE_MIGRATION_DATABASE_URL": owner_url,
                "B2BSCORE_VAR_DIR": str(tmp_path),
            }
            yield Roles(owner_url, app_url, role, env)
    finally:
        await admin_execute(postgres_admin_dsn, f"DROP ROLE IF EXISTS {role}")


async def test_the_app_role_records_and_reads_and_nothing_more(
    roles: Roles, chain_keys: ChainKeyring
) -> None:
    keyring = DataKeyring({"k1": secrets.token_bytes(32)})
    granted = await run_cli(["db", "grant-app-role", roles.role], roles.env)
    assert granted.exit_code == 0, granted.output
    assert f"role {roles.role} may SELECT and INSERT on decisions, nothing more" in granted.output

    # The service works as the role: tenants, keys and audit rows are written and read.
    engine = create_engine(roles.app_url, pool_size=2)
    try:
        async with create_sessionmaker(engine)() as session:
            tenant = await new_tenant(session)
            await session.commit()
            tenant_id = tenant.id
        writer = AuditWriter(create_sessionmaker(engine), keyring, chain_keys)
        written = await asyncio.gather(
            *(writer.record(make_record(tenant_id)) for _ in range(5)),
            writer.record(make_record(tenant_id, mode="live")),
        )
        await writer.close()
        async with create_sessionmaker(engine)() as session:
            count = (await session.execute(select(func.count()).select_from(Decision))).scalar()
            assert count == len(written)
            assert (await verify_chain(session, chain_keys=chain_keys)).ok
    finally:
        await engine.dispose()

    victim = written[0].id
    conn = await asyncpg.connect(asyncpg_dsn(roles.app_url))
    try:
        for sql in (
            f"UPDATE decisions SET score = 1 WHERE id = '{victim}'",
            "UPDATE decisions SET payload_ciphertext = NULL, payload_nonce = NULL",
            f"DELETE FROM decisions WHERE id = '{victim}'",
            "TRUNCATE decisions",
            "ALTER TABLE decisions DISABLE TRIGGER decisions_append_only",
            "ALTER TABLE decisions DISABLE TRIGGER ALL",
            "DROP TRIGGER decisions_append_only ON decisions",
            "DROP TABLE decisions",
            "SET session_replication_role = replica",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
        # Granting itself more is a no-op for a role that owns nothing (only a warning).
        await conn.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON decisions TO {roles.role}")
        for privilege in ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER"):
            assert not await conn.fetchval(
                "SELECT has_table_privilege(current_user, 'decisions', $1)", privilege
            )
        assert await conn.fetchval("SELECT count(*) FROM decisions") == len(written)
    finally:
        await conn.close()

    # Retention is the owner's job: the purge runs on the migration URL ...
    purged = await run_cli(["audit", "purge-payloads", "--older-than", "0"], roles.env)
    assert purged.exit_code == 0, purged.output
    assert f"purged the payloads of {len(written)} decisions" in purged.output
    # ... and the service's role alone cannot run it.
    alone = {k: v for k, v in roles.env.items() if k != "B2BSCORE_MIGRATION_DATABASE_URL"}
    refused = await run_cli(["audit", "purge-payloads", "--older-than", "0"], alone)
    assert refused.exit_code != 0
    assert isinstance(refused.exception, Exception)
    assert "permission denied" in str(refused.exception)


async def test_a_role_that_could_undo_the_grants_is_refused(roles: Roles) -> None:
    owner = make_url(roles.owner_url).username
    assert owner is not None
    result = await run_cli(["db", "grant-app-role", owner], roles.env)
    assert result.exit_code == 1
    assert "superuser or owns the audit table" in result.output
    result = await run_cli(["db", "grant-app-role", "no_such_role_here"], roles.env)
    assert result.exit_code == 1
    assert "does not exist" in result.output
    result = await run_cli(["db", "grant-app-role", "x; DROP TABLE decisions"], roles.env)
    assert result.exit_code == 1
    assert "role names are" in result.output


async def test_migrations_run_on_the_migration_url(roles: Roles) -> None:
    # The service's URL leads nowhere here: only the owner's URL can have been used.
    env = {**roles.env, "B2BSCORE_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/x"}
    result = await run_cli(["db", "upgrade"], env)
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
