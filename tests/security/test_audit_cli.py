"""`b2bscore audit verify / purge-payloads / rotate-data-key` on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner, Result

from b2bscore.cli import app as cli
from b2bscore.decisions.chainkeys import CHAIN_KEY_FILE_NAME, ChainKeyring
from b2bscore.decisions.crypto import KEY_FILE_NAME, DataKeyring, KeyringError
from b2bscore.decisions.models import Decision
from b2bscore.decisions.service import open_payloads, record_decision
from b2bscore.kit.db import create_engine, create_sessionmaker
from b2bscore.kit.settings import Settings
from tests.decisions.factories import make_record, new_tenant
from tests.security.conftest import fresh_database, tamper


@dataclass
class Audit:
    """A fresh database with two tenants' chains, and the CLI's environment for it."""

    url: str
    engine: AsyncEngine
    keyring: DataKeyring
    env: dict[str, str]
    tenant: str
    tenant_name: str
    other: str
    rows: list[Decision]
    chain_keys: ChainKeyring


async def run_cli(args: list[str], env: Mapping[str, str]) -> Result:
    """The CLI in a worker thread: its asyncio.run needs a thread without a running loop."""
    runner = CliRunner()
    return await asyncio.to_thread(lambda: runner.invoke(cli, args, env=dict(env)))


@pytest.fixture
async def audit(postgres_admin_dsn: str, tmp_path: Path) -> AsyncIterator[Audit]:
    """Three rows for one tenant, two for another, keys in a key file under var_dir."""
    async with fresh_database(postgres_admin_dsn, "audit") as (_, url):
        keyring = DataKeyring.from_file(tmp_path / KEY_FILE_NAME)
        chain_keys = ChainKeyring.from_file(tmp_path / CHAIN_KEY_FILE_NAME)
        engine = create_engine(url, pool_size=2)
        try:
            async with create_sessionmaker(engine)() as session:
                tenant, other = await new_tenant(session), await new_tenant(session)
                await session.commit()
                rows = [
                    await record_decision(
                        session,
                        record=make_record(tenant.id, score=600 + i),
                        keyring=keyring,
                        chain_keys=chain_keys,
                    )
                    for i in range(3)
                ]
                for _ in range(2):
                    await record_decision(
                        session,
                        record=make_record(other.id),
                        keyring=keyring,
                        chain_keys=chain_keys,
                    )
            env = {"B2BSCORE_DATABASE_URL": url, "B2BSCORE_VAR_DIR": str(tmp_path)}
            yield Audit(
                url, engine, keyring, env, tenant.id, tenant.name, other.id, rows, chain_keys
            )
        finally:
            await engine.dispose()


async def test_verify_passes_on_intact_chains(audit: Audit) -> None:
    result = await run_cli(["audit", "verify"], audit.env)
    assert result.exit_code == 0, result.output
    # Two tenants with test rows only: one chain each.
    assert "OK: 5 rows in 2 chains verified" in result.output
    result = await run_cli(
        ["audit", "verify", "--tenant", audit.tenant_name, "--payloads"], audit.env
    )
    assert result.exit_code == 0, result.output
    assert "OK: 3 rows in 1 chains and payloads verified" in result.output


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("UPDATE decisions SET score = 999 WHERE id = $1", "row_hash"),
        ("UPDATE decisions SET features = '{}'::jsonb WHERE id = $1", "row_hash"),
        ("DELETE FROM decisions WHERE id = $1", "seq_gap"),
        ("UPDATE decisions SET prev_hash = repeat('1', 64) WHERE id = $1", "prev_hash"),
    ],
)
async def test_verify_names_the_row_altered_behind_the_trigger(
    audit: Audit, sql: str, reason: str
) -> None:
    victim = audit.rows[1]
    assert await tamper(audit.url, sql, victim.id) in {"UPDATE 1", "DELETE 1"}
    result = await run_cli(["audit", "verify"], audit.env)
    assert result.exit_code == 1, result.output
    broken = [line for line in result.output.splitlines() if line.startswith("BROKEN")]
    # Only the tampered tenant is broken, and at the tampered row (or the one after a gap).
    assert len(broken) == 1
    if reason == "seq_gap":
        assert f"decision={audit.rows[2].id} seq=3 reason=seq_gap" in broken[0]
    else:
        assert f"decision={victim.id} seq=2 reason={reason}" in broken[0]
    assert f"tenant={audit.tenant}" in broken[0]
    other = await run_cli(["audit", "verify", "--tenant", audit.other], audit.env)
    assert other.exit_code == 0, other.output


async def test_verify_payloads_catches_a_swapped_ciphertext(audit: Audit) -> None:
    first, second = audit.rows[0], audit.rows[1]
    # Same key, valid ciphertext, but another row's: the AAD binds it to its own row.
    await tamper(
        audit.url,
        "UPDATE decisions SET payload_ciphertext = $2, payload_nonce = $3 WHERE id = $1",
        second.id,
        first.payload_ciphertext,
        first.payload_nonce,
    )
    # The chain alone does not cover the ciphertext (so that purging keeps it valid) ...
    assert (await run_cli(["audit", "verify"], audit.env)).exit_code == 0
    # ... the payload check does.
    result = await run_cli(["audit", "verify", "--payloads"], audit.env)
    assert result.exit_code == 1, result.output
    assert f"decision={second.id} seq=2 reason=payload_digest" in result.output


async def test_verify_payloads_without_keys_refuses_to_guess(audit: Audit, tmp_path: Path) -> None:
    env = {**audit.env, "B2BSCORE_VAR_DIR": str(tmp_path / "elsewhere")}
    result = await run_cli(["audit", "verify", "--payloads"], env)
    assert result.exit_code == 2
    assert not (tmp_path / "elsewhere" / KEY_FILE_NAME).exists()


async def test_purge_keeps_decisions_and_chains(audit: Audit) -> None:
    result = await run_cli(["audit", "purge-payloads", "--older-than", "1"], audit.env)
    assert result.exit_code == 0, result.output
    assert "purged the payloads of 0 decisions" in result.output
    # --older-than 0: every row is older than now.
    result = await run_cli(["audit", "purge-payloads", "--older-than", "0"], audit.env)
    assert result.exit_code == 0, result.output
    assert "purged the payloads of 5 decisions" in result.output
    async with audit.engine.connect() as connection:
        rows = (await connection.execute(select(Decision).order_by(Decision.seq))).all()
    assert all(r.payload_ciphertext is None and r.payload_nonce is None for r in rows)
    by_id = {r.id: r for r in rows}
    for written in audit.rows:
        stored = by_id[written.id]
        assert (stored.decision, stored.score, stored.row_hash) == (
            written.decision,
            written.score,
            written.row_hash,
        )
        assert stored.features == written.features
        assert stored.reasons == written.reasons
        assert stored.payload_digest == written.payload_digest
    result = await run_cli(["audit", "verify", "--payloads"], audit.env)
    assert result.exit_code == 0, result.output


async def test_purge_only_touches_rows_older_than_the_cutoff(audit: Audit) -> None:
    old = audit.rows[0]
    # Backdate one row behind the trigger; the chain breaks, but only the cutoff matters here.
    await tamper(
        audit.url,
        "UPDATE decisions SET created_at = created_at - interval '40 days' WHERE id = $1",
        old.id,
    )
    result = await run_cli(["audit", "purge-payloads", "--older-than", "30"], audit.env)
    assert result.exit_code == 0, result.output
    assert "purged the payloads of 1 decisions" in result.output
    async with audit.engine.connect() as connection:
        purged = dict(
            (await connection.execute(select(Decision.id, Decision.payload_ciphertext))).all()
        )
    assert purged[old.id] is None
    assert all(v is not None for k, v in purged.items() if k != old.id)


async def test_the_trigger_allows_the_purge_and_nothing_else(audit: Audit) -> None:
    import asyncpg

    dsn = audit.url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute(
                "UPDATE decisions SET payload_ciphertext = NULL, payload_nonce = NULL, "
                "score = 1 WHERE id = $1",
                audit.rows[0].id,
            )
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute(
                "UPDATE decisions SET payload_nonce = NULL WHERE id = $1", audit.rows[0].id
            )
    finally:
        await conn.close()


async def test_rotation_with_a_key_file_encrypts_new_rows_with_the_new_key(
    audit: Audit, tmp_path: Path
) -> None:
    result = await run_cli(["audit", "rotate-data-key"], audit.env)
    assert result.exit_code == 0, result.output
    assert "added data key k2-" in result.output
    rotated = DataKeyring.from_file(tmp_path / KEY_FILE_NAME)
    assert rotated.key_ids[:-1] == audit.keyring.key_ids
    assert rotated.key_ids[-1].startswith("k2-")
    async with create_sessionmaker(audit.engine)() as session:
        new = await record_decision(
            session, record=make_record(audit.tenant), keyring=rotated, chain_keys=audit.chain_keys
        )
        assert new.payload_key_id == rotated.key_ids[-1]
        rows = (
            (await session.execute(select(Decision).where(Decision.tenant_id == audit.tenant)))
            .scalars()
            .all()
        )
        for row in rows:
            assert open_payloads(row, rotated) is not None
    # A server still on the old keyring cannot read the new row: the key really changed.
    with pytest.raises(KeyringError, match="unknown key"):
        open_payloads(new, audit.keyring)
    result = await run_cli(["audit", "verify", "--payloads"], audit.env)
    assert result.exit_code == 0, result.output


async def test_rotation_with_keys_from_the_environment_prints_the_new_key(audit: Audit) -> None:
    old_spec = f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    env = {**audit.env, "B2BSCORE_DATA_KEYS": old_spec}
    result = await run_cli(["audit", "rotate-data-key"], env)
    assert result.exit_code == 0, result.output
    new_spec = result.stdout.strip().splitlines()[-1]
    assert new_spec.startswith("k2-")
    assert "B2BSCORE_DATA_KEYS" in result.stdout
    keyring = DataKeyring.from_settings(Settings(data_keys=f"{old_spec},{new_spec}"))
    assert keyring.current_key_id == new_spec.split(":")[0]
    old_only = DataKeyring.from_settings(Settings(data_keys=old_spec))
    _, nonce, ciphertext = old_only.encrypt(b"old row", b"aad")
    assert keyring.decrypt("k1", nonce, ciphertext, b"aad") == b"old row"
