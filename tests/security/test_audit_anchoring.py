"""An insider with write access to the audit store, on PostgreSQL and on SQLite.

Every attack of issue 16 is run against a fresh store with keyed chains and a published
checkpoint, then `b2bscore audit verify` must exit 1 and name what is wrong: the last
row or the last 1,000 rows cut off, a tenant's rows all deleted, one row changed and
every later row re-hashed (with the project's own function, keyless; and with the
chain key itself, which only the checkpoint catches), a checkpoint removed from the
checkpoint file. The insider gets past the append-only triggers as one can: on
PostgreSQL a superuser's `session_replication_role = replica`, on SQLite by dropping
the triggers in the database file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from typer.testing import CliRunner, Result

from b2bscore.cli import app as cli
from b2bscore.decisions.chain import compute_row_hash
from b2bscore.decisions.chainkeys import CHAIN_KEY_FILE_NAME, ChainKeyring
from b2bscore.decisions.checkpoints import (
    CheckpointPublisher,
    CheckpointSigner,
    CheckpointStore,
)
from b2bscore.decisions.crypto import KEY_FILE_NAME, DataKeyring
from b2bscore.decisions.endpoints import get_chain_keys, router
from b2bscore.decisions.models import Decision
from b2bscore.decisions.writer import AuditWriter
from b2bscore.kit.db import create_engine, create_sessionmaker, upgrade_database_async
from b2bscore.kit.deps import get_db_session, get_session_opener
from b2bscore.kit.problems import install_problem_handlers
from b2bscore.kit.settings import Settings
from b2bscore.tenants.auth import principal_cache
from b2bscore.tenants.service import create_api_key
from tests.decisions.factories import make_record, new_tenant
from tests.security.conftest import Stack as SecurityStack
from tests.security.conftest import fresh_database

SQLITE_TRIGGERS = ("decisions_append_only_update", "decisions_append_only_delete")


@dataclass
class Store:
    """A fresh audit store with three chains, a checkpoint, and the CLI's environment."""

    backend: str
    url: str
    var_dir: Path
    engine: AsyncEngine
    keyring: DataKeyring
    chain_keys: ChainKeyring
    env: dict[str, str]
    tenant: str  # chains test (5 rows) and live (3 rows)
    other: str  # chain test (3 rows)
    reader_key: str  # tenant's test key with decisions:read

    async def rows(self, tenant_id: str, mode: str) -> list[Decision]:
        """The chain's rows in seq order, as stored."""
        async with create_sessionmaker(self.engine)() as session:
            statement = (
                select(Decision)
                .where(Decision.tenant_id == tenant_id, Decision.mode == mode)
                .order_by(Decision.seq)
            )
            return list((await session.execute(statement)).scalars().all())

    async def tamper(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run sql past the append-only triggers, as an insider with write access can."""
        async with self.engine.begin() as connection:
            if self.backend == "postgresql":
                await connection.execute(text("SET LOCAL session_replication_role = replica"))
            else:
                for trigger in SQLITE_TRIGGERS:
                    await connection.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
            await connection.execute(text(sql), dict(params or {}))

    async def write(self, tenant_id: str, mode: str, count: int) -> None:
        """count more rows through the service's own group-commit writer."""
        writer = AuditWriter(create_sessionmaker(self.engine), self.keyring, self.chain_keys)
        try:
            await asyncio.gather(
                *(writer.record(make_record(tenant_id, mode=mode)) for _ in range(count))
            )
        finally:
            await writer.close()


async def run_cli(args: list[str], env: Mapping[str, str]) -> Result:
    """The CLI in a worker thread: its asyncio.run needs a thread without a running loop."""
    runner = CliRunner()
    return await asyncio.to_thread(lambda: runner.invoke(cli, args, env=dict(env)))


async def verify(store: Store, *extra: str) -> Result:
    """`b2bscore audit verify` on the store."""
    return await run_cli(["audit", "verify", *extra], store.env)


async def checkpoint(store: Store) -> None:
    """`b2bscore audit checkpoint` on the store."""
    result = await run_cli(["audit", "checkpoint"], store.env)
    assert result.exit_code == 0, result.output


def broken_lines(result: Result) -> list[str]:
    """The BROKEN lines of a verify run."""
    return [line for line in result.output.splitlines() if line.startswith("BROKEN")]


@asynccontextmanager
async def _database(backend: str, admin_dsn: str, var_dir: Path) -> AsyncIterator[str]:
    if backend == "postgresql":
        async with fresh_database(admin_dsn, "anchor") as (_, url):
            yield url
        return
    url = f"sqlite+aiosqlite:///{var_dir / 'b2bscore.db'}"
    await upgrade_database_async(url)
    yield url


@pytest.fixture(params=["postgresql", "sqlite"])
async def store(
    request: pytest.FixtureRequest, postgres_admin_dsn: str, tmp_path: Path
) -> AsyncIterator[Store]:
    """Keys in files under var_dir, as on the embedded default; one checkpoint published."""
    backend: str = request.param
    var_dir = tmp_path / "var"
    async with _database(backend, postgres_admin_dsn, var_dir) as url:
        engine = create_engine(url, pool_size=5)
        try:
            async with create_sessionmaker(engine)() as session:
                tenant, other = await new_tenant(session), await new_tenant(session)
                _, reader = await create_api_key(session, tenant, "test", ["decisions:read"])
                await session.commit()
                tenant_id, other_id = tenant.id, other.id
            built = Store(
                backend,
                url,
                var_dir,
                engine,
                DataKeyring.from_file(var_dir / KEY_FILE_NAME),
                ChainKeyring.from_file(var_dir / CHAIN_KEY_FILE_NAME),
                {"B2BSCORE_DATABASE_URL": url, "B2BSCORE_VAR_DIR": str(var_dir)},
                tenant_id,
                other_id,
                reader,
            )
            await built.write(tenant_id, "test", 5)
            await built.write(tenant_id, "live", 3)
            await built.write(other_id, "test", 3)
            await checkpoint(built)
            yield built
        finally:
            await engine.dispose()


async def test_intact_chains_verify_against_the_checkpoint(store: Store) -> None:
    result = await verify(store, "--payloads")
    assert result.exit_code == 0, result.output
    assert "against checkpoint 1 of" in result.output
    assert "OK: 11 rows in 3 chains and payloads verified" in result.output
    # Test and live are separate chains: each starts at seq 1 from the genesis hash.
    for mode, length in (("test", 5), ("live", 3)):
        rows = await store.rows(store.tenant, mode)
        assert [r.seq for r in rows] == list(range(1, length + 1))
        assert rows[0].prev_hash == "0" * 64
        assert {r.chain_key_id for r in rows} == {"c1"}


async def test_cutting_off_the_last_row_is_caught(store: Store) -> None:
    last = (await store.rows(store.tenant, "test"))[-1]
    await store.tamper("DELETE FROM decisions WHERE id = :id", {"id": last.id})
    result = await verify(store)
    assert result.exit_code == 1, result.output
    assert broken_lines(result) == [
        f"BROKEN tenant={store.tenant} mode=test decision=- seq=5 reason=checkpoint_truncated"
    ]


async def test_cutting_off_the_last_thousand_rows_is_caught(store: Store) -> None:
    await store.write(store.other, "live", 1_005)
    await checkpoint(store)
    await store.tamper(
        "DELETE FROM decisions WHERE tenant_id = :tenant AND mode = 'live' AND seq > 5",
        {"tenant": store.other},
    )
    assert len(await store.rows(store.other, "live")) == 5
    result = await verify(store)
    assert result.exit_code == 1, result.output
    assert broken_lines(result) == [
        f"BROKEN tenant={store.other} mode=live decision=- seq=1005 reason=checkpoint_truncated"
    ]


async def test_deleting_every_row_of_a_tenant_is_caught(store: Store) -> None:
    await store.tamper("DELETE FROM decisions WHERE tenant_id = :t", {"t": store.other})
    result = await verify(store)
    assert result.exit_code == 1, result.output
    assert broken_lines(result) == [
        f"BROKEN tenant={store.other} mode=test decision=- seq=3 reason=checkpoint_missing_chain"
    ]


async def _rehash_from(store: Store, victim: Decision, keys: ChainKeyring | None) -> None:
    """Change victim's score, then re-link it and every later row of its chain.

    keys=None: the project's own hash function without the key (the rows are marked
    unkeyed, the only rule that needs none); keys: an insider who also stole the key.
    """
    rows = [r for r in await store.rows(victim.tenant_id, victim.mode) if r.seq >= victim.seq]
    prev_hash = rows[0].prev_hash
    for row in rows:
        if row.id == victim.id:
            row.score = 999
        row.prev_hash = prev_hash
        if keys is None:
            row.chain_key_id = None
        row.row_hash = compute_row_hash(prev_hash, row, keys)
        await store.tamper(
            "UPDATE decisions SET score = :score, prev_hash = :prev, row_hash = :hash, "
            "chain_key_id = :key WHERE id = :id",
            {
                "score": row.score,
                "prev": row.prev_hash,
                "hash": row.row_hash,
                "key": row.chain_key_id,
                "id": row.id,
            },
        )
        prev_hash = row.row_hash


async def test_rehashing_without_the_key_is_caught(store: Store) -> None:
    victim = (await store.rows(store.tenant, "test"))[1]
    await _rehash_from(store, victim, None)
    result = await verify(store)
    assert result.exit_code == 1, result.output
    lines = broken_lines(result)
    # Rows marked unkeyed are not where unkeyed rows can be (none were written after 0002):
    # the chain breaks where they begin, and its head no longer has the checkpointed hash.
    assert lines
    assert all(f"tenant={store.tenant} mode=test" in line for line in lines), lines
    assert f"decision={victim.id} seq=2 reason=seq_gap" in lines[0]
    assert "seq=5 reason=checkpoint_hash" in lines[-1]


async def test_rehashing_with_the_stolen_key_is_caught_by_the_checkpoint(store: Store) -> None:
    victim = (await store.rows(store.tenant, "test"))[1]
    await _rehash_from(store, victim, store.chain_keys)
    result = await verify(store)
    assert result.exit_code == 1, result.output
    head = (await store.rows(store.tenant, "test"))[-1]
    assert broken_lines(result) == [
        f"BROKEN tenant={store.tenant} mode=test decision={head.id} seq=5 reason=checkpoint_hash"
    ]


async def test_a_modified_row_is_caught_and_not_served(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    victim = (await store.rows(store.tenant, "test"))[2]
    await store.tamper(
        "UPDATE decisions SET decision = 'approve', score = 990 WHERE id = :id", {"id": victim.id}
    )
    result = await verify(store)
    assert result.exit_code == 1, result.output
    assert broken_lines(result) == [
        f"BROKEN tenant={store.tenant} mode=test decision={victim.id} seq=3 reason=row_hash"
    ]

    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    sessions = create_sessionmaker(store.engine)

    async def session_override() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    app.dependency_overrides[get_db_session] = session_override
    app.dependency_overrides[get_session_opener] = lambda: sessions
    app.dependency_overrides[get_chain_keys] = lambda: store.chain_keys
    principal_cache.clear()
    headers = {"Authorization": f"Bearer {store.reader_key}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        intact = (await store.rows(store.tenant, "test"))[1]
        assert (await client.get(f"/v1/decisions/{intact.id}", headers=headers)).status_code == 200
        with caplog.at_level(logging.ERROR, logger="b2bscore.decisions.endpoints"):
            response = await client.get(f"/v1/decisions/{victim.id}", headers=headers)
            again = await client.get(f"/v1/decisions/{victim.id}", headers=headers)
    assert response.status_code == again.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "integrity_error"
    assert "990" not in response.text
    # Logged once for the two reads, with ids only: nothing of the company or the decision.
    [logged] = [r.getMessage() for r in caplog.records if "integrity" in r.getMessage()]
    assert f"decision={victim.id}" in logged
    assert "reason=row_hash" in logged
    assert victim.siren not in logged
    assert "990" not in logged


async def test_a_removed_or_edited_checkpoint_is_caught(store: Store) -> None:
    await store.write(store.tenant, "test", 1)
    await checkpoint(store)
    await store.write(store.tenant, "test", 1)
    await checkpoint(store)
    path = store.var_dir / "audit_checkpoints.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    assert (await verify(store)).exit_code == 0

    path.write_bytes(lines[0] + lines[2])
    result = await verify(store)
    assert result.exit_code == 1, result.output
    assert "CHECKPOINT checkpoint 2: numbered 3 (a checkpoint before it was removed)" in (
        result.output
    )

    path.write_bytes(lines[0] + lines[1].replace(b'"seq":6', b'"seq":5') + lines[2])
    result = await verify(store)
    assert result.exit_code == 1, result.output
    assert "CHECKPOINT checkpoint 2: bad signature" in result.output
    assert "CHECKPOINT checkpoint 3: does not link to the one before it" in result.output


async def test_an_auditor_verifies_with_the_exported_public_key(store: Store) -> None:
    exported = await run_cli(["audit", "public-key"], store.env)
    assert exported.exit_code == 0, exported.output
    assert exported.output.startswith("-----BEGIN PUBLIC KEY-----")
    pem = store.var_dir.parent / "auditor.pem"
    pem.write_text(exported.output)
    result = await verify(store, "--public-key", str(pem))
    assert result.exit_code == 0, result.output
    # Another key did not sign these checkpoints.
    other = CheckpointSigner.from_settings(Settings(var_dir=store.var_dir.parent / "elsewhere"))
    wrong = store.var_dir.parent / "wrong.pem"
    wrong.write_text(_pem(other))
    result = await verify(store, "--public-key", str(wrong))
    assert result.exit_code == 1
    assert "signed by unknown key" in result.output


def _pem(signer: CheckpointSigner) -> str:
    from b2bscore.decisions.checkpoints import public_key_pem

    return public_key_pem(signer.public_key)


async def test_workers_publish_one_checkpoint_per_interval(store: Store) -> None:
    signer = CheckpointSigner.from_settings(Settings(var_dir=store.var_dir))
    checkpoints = CheckpointStore.at(store.var_dir / "audit_checkpoints.jsonl")
    sessions = create_sessionmaker(store.engine)
    workers = [CheckpointPublisher(sessions, signer, checkpoints, 300) for _ in range(3)]
    # Nothing moved since the fixture's checkpoint: nobody publishes.
    assert await asyncio.gather(*(w.publish_once() for w in workers)) == [None] * 3
    assert len(checkpoints.read()) == 1
    await store.write(store.tenant, "live", 1)
    # The fixture's checkpoint is seconds old: still nobody within half an interval ...
    assert await asyncio.gather(*(w.publish_once() for w in workers)) == [None] * 3
    # ... while with a short interval exactly one of them publishes the moved head.
    eager = [CheckpointPublisher(sessions, signer, checkpoints, 0.001) for _ in range(3)]
    published = [p for p in await asyncio.gather(*(w.publish_once() for w in eager)) if p]
    assert len(published) == 1
    assert len(checkpoints.read()) == 2
    assert (await verify(store)).exit_code == 0


async def test_legacy_unkeyed_rows_stay_verifiable_and_pinned(
    postgres_admin_dsn: str, tmp_path: Path
) -> None:
    for name in ("postgresql", "sqlite"):
        await _legacy_scenario(name, postgres_admin_dsn, tmp_path / name)


async def _legacy_scenario(backend: str, admin_dsn: str, var_dir: Path) -> None:
    """Rows written by revision 0001 (one unkeyed chain per tenant, modes interleaved)."""
    from alembic import command

    from b2bscore.decisions.service import prepare_row
    from b2bscore.kit.db import alembic_config

    async with _database(backend, admin_dsn, var_dir) as url:
        # One step below head: the revision before 0002, whatever the chain is relinked to.
        await asyncio.to_thread(command.downgrade, alembic_config(url), "-1")
        engine = create_engine(url, pool_size=2)
        keyring = DataKeyring.from_file(var_dir / KEY_FILE_NAME)
        chain_keys = ChainKeyring.from_file(var_dir / CHAIN_KEY_FILE_NAME)
        try:
            async with create_sessionmaker(engine)() as session:
                tenant = await new_tenant(session)
                await session.commit()
                tenant_id = tenant.id
            prev_hash = "0" * 64
            columns = [c.key for c in Decision.__table__.columns if c.key != "chain_key_id"]
            legacy = []
            for seq, mode in enumerate(["test", "live", "test", "live", "test"], start=1):
                row = prepare_row(make_record(tenant_id, mode=mode), keyring)
                row.seq, row.prev_hash, row.chain_key_id = seq, prev_hash, None
                row.created_at = datetime.now(UTC)
                row.row_hash = compute_row_hash(prev_hash, row)  # the unkeyed rule of 0001
                prev_hash = row.row_hash
                legacy.append(row)
                async with engine.begin() as connection:
                    await connection.execute(
                        insert(Decision).values({c: getattr(row, c) for c in columns})
                    )
            await engine.dispose()
            await upgrade_database_async(url)
            engine = create_engine(url, pool_size=2)
            env = {"B2BSCORE_DATABASE_URL": url, "B2BSCORE_VAR_DIR": str(var_dir)}
            store = Store(
                backend, url, var_dir, engine, keyring, chain_keys, env, tenant_id, "", ""
            )
            await store.write(tenant_id, "test", 2)
            await store.write(tenant_id, "live", 2)
            await checkpoint(store)
            result = await verify(store)
            assert result.exit_code == 0, result.output
            assert "OK: 9 rows in 2 chains verified" in result.output
            # The first keyed row of each mode continues from that mode's last unkeyed row.
            for mode, last_legacy in (("test", legacy[4]), ("live", legacy[3])):
                keyed = [r for r in await store.rows(tenant_id, mode) if r.chain_key_id]
                assert keyed[0].seq == last_legacy.seq + 1
                assert keyed[0].prev_hash == last_legacy.row_hash

            # An old row changed and the unkeyed rows after it re-hashed: the keyed rows
            # that follow them pin them.
            prev_hash = legacy[1].prev_hash
            for row in legacy[1:]:
                if row is legacy[1]:
                    row.score = 999
                row.prev_hash = prev_hash
                row.row_hash = compute_row_hash(prev_hash, row)
                prev_hash = row.row_hash
                await store.tamper(
                    "UPDATE decisions SET score = :s, prev_hash = :p, row_hash = :h WHERE id = :id",
                    {"s": row.score, "p": row.prev_hash, "h": row.row_hash, "id": row.id},
                )
            result = await verify(store)
            assert result.exit_code == 1, result.output
            assert {line.split(" reason=")[1] for line in broken_lines(result)} == {"prev_hash"}
        finally:
            await engine.dispose()


async def test_the_embedded_store_and_its_keys_are_private(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    settings = Settings(var_dir=var_dir)
    url = settings.resolved_database_url
    await upgrade_database_async(url)
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            tenant = await new_tenant(session)
            await session.commit()
        store = Store(
            "sqlite",
            url,
            var_dir,
            engine,
            DataKeyring.from_settings(settings),
            ChainKeyring.from_settings(settings),
            {},
            tenant.id,
            "",
            "",
        )
        await store.write(tenant.id, "test", 3)
        CheckpointSigner.from_settings(settings)
        env = {"B2BSCORE_VAR_DIR": str(var_dir)}
        assert (await run_cli(["audit", "checkpoint"], env)).exit_code == 0
        names = ["b2bscore.db", "b2bscore.db-wal", "b2bscore.db-shm"]
        names += ["data_keys", "audit_keys", "audit_signing_key", "audit_checkpoints.jsonl"]
        for name in names:
            mode = stat.S_IMODE((var_dir / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
        assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700

        # SQLite's triggers refuse changes and deletions through the service's own engine ...
        victim = (await store.rows(tenant.id, "test"))[0]
        for sql in (
            "UPDATE decisions SET score = 1 WHERE id = :id",
            "UPDATE decisions SET payload_nonce = NULL WHERE id = :id",
            "UPDATE decisions SET payload_ciphertext = NULL, payload_nonce = NULL, "
            "chain_key_id = NULL WHERE id = :id",
            "DELETE FROM decisions WHERE id = :id",
            "DELETE FROM decisions",
        ):
            with pytest.raises(IntegrityError, match="append-only"):
                async with engine.begin() as connection:
                    await connection.execute(text(sql), {"id": victim.id})
        # ... except the retention purge, after which every chain still verifies.
        purged = await run_cli(["audit", "purge-payloads", "--older-than", "0"], env)
        assert purged.exit_code == 0, purged.output
        assert "purged the payloads of 3 decisions" in purged.output
        result = await run_cli(["audit", "verify", "--payloads"], env)
        assert result.exit_code == 0, result.output
    finally:
        await engine.dispose()


def _documented_recipe() -> str:
    """The standalone verification recipe of docs/SECURITY.md, as auditors would copy it."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "SECURITY.md").read_text()
    section = doc.split("#### Verifying without the service", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_documented_recipe_verifies_without_the_service(
    store: Store, tmp_path: Path
) -> None:
    await store.write(store.tenant, "live", 2)
    await checkpoint(store)
    script = tmp_path / "verify_checkpoints.py"
    script.write_text(_documented_recipe())
    checkpoints = store.var_dir / "audit_checkpoints.jsonl"
    public = store.var_dir / "audit_signing_key.pub.pem"

    def run(*args: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
        )

    done = run(checkpoints, public)
    assert done.returncode == 0, done.stderr
    heads = {(h["tenant"], h["mode"]): (h["seq"], h["hash"]) for h in json.loads(done.stdout)}
    for mode in ("test", "live"):
        head = (await store.rows(store.tenant, mode))[-1]
        assert heads[(store.tenant, mode)] == (head.seq, head.row_hash)

    lines = checkpoints.read_bytes().splitlines(keepends=True)
    checkpoints.write_bytes(lines[1])
    assert "a checkpoint was removed or edited" in run(checkpoints, public).stderr
    checkpoints.write_bytes(lines[0].replace(b'"seq":5', b'"seq":4'))
    assert "InvalidSignature" in run(checkpoints, public).stderr


async def test_the_servers_publish_checkpoints_in_the_background(
    stack: SecurityStack, tmp_path: Path
) -> None:
    """Started by the app's lifespan, off the request path, at the configured interval."""
    from b2bscore.app import create_app
    from tests.servers import serve_in_thread

    answered = await stack.client.post(
        "/v1/score",
        json={"siren": "111111118", "requested_amount": "25000.00", "product": "term_loan"},
        headers={"Authorization": f"Bearer {stack.keys.writer}"},
    )
    assert answered.status_code == 200, answered.text
    settings = stack.settings.model_copy(
        update={"var_dir": tmp_path / "var", "audit_checkpoint_interval_seconds": 1}
    )
    path = settings.resolved_checkpoint_path
    with serve_in_thread(create_app(settings)):
        for _ in range(100):
            if path.exists() and path.read_bytes():
                break
            await asyncio.sleep(0.1)
    [line] = path.read_bytes().splitlines()
    heads = {(h["tenant"], h["mode"]) for h in json.loads(line)["heads"]}
    assert (stack.keys.tenant_a, "test") in heads


def test_the_last_checkpoint_is_read_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.jsonl"
    store = CheckpointStore.at(path)
    assert store.last() is None
    lines = [bytes([65 + i]) * 100_000 for i in range(3)]  # each longer than a read block
    for number, line in enumerate(lines, start=1):
        assert store.append(number, line)
    assert store.last() == lines[-1]
    assert store.read() == lines
    # A torn last write is what the next publication sees, and refuses to chain onto.
    with path.open("ab") as handle:
        handle.write(b'{"v":1,"n":4')
    assert store.last() == b'{"v":1,"n":4'

    directory = tmp_path / "worm"
    directory.mkdir()
    files = CheckpointStore.at(directory)
    assert files.last() is None
    assert files.append(1, b"one")
    assert not files.append(1, b"again")  # write-once: the first publisher wins
    assert files.append(2, b"two")
    assert (files.read(), files.last()) == ([b"one", b"two"], b"two")
    assert (directory / "checkpoint-000000000001.json").read_bytes() == b"one\n"


async def test_a_torn_checkpoint_is_never_chained_onto(store: Store) -> None:
    path = store.var_dir / "audit_checkpoints.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"v":1,"n":2,"he')
    result = await run_cli(["audit", "checkpoint"], store.env)
    assert result.exit_code == 1
    assert "unreadable" in result.output
    result = await verify(store)
    assert result.exit_code == 1
    assert "CHECKPOINT checkpoint 2: not a checkpoint (torn or edited)" in result.output


async def test_rotating_the_chain_key_keeps_old_rows_verifiable(store: Store) -> None:
    rotated = await run_cli(["audit", "rotate-chain-key"], store.env)
    assert rotated.exit_code == 0, rotated.output
    assert "added audit chain key c2" in rotated.output
    store.chain_keys = ChainKeyring.from_file(store.var_dir / CHAIN_KEY_FILE_NAME)
    assert store.chain_keys.key_ids == ("c1", "c2")
    await store.write(store.tenant, "test", 2)
    rows = await store.rows(store.tenant, "test")
    assert [r.chain_key_id for r in rows] == ["c1"] * 5 + ["c2"] * 2
    await checkpoint(store)
    assert (await verify(store)).exit_code == 0
    # A row naming a key nobody holds is named as such.
    await store.tamper(
        "UPDATE decisions SET chain_key_id = 'c9' WHERE id = :id", {"id": rows[6].id}
    )
    result = await verify(store)
    assert result.exit_code == 1
    assert f"decision={rows[6].id} seq=7 reason=chain_key" in result.output
