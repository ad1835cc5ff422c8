"""Group commit: concurrent decisions of one tenant share transactions, never the chain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.decisions.chain import RowContent, compute_row_hash, verify_chain
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.models import Decision
from b2bscore.decisions.service import (
    AuditUnavailable,
    IdempotencyConflict,
    link_into_chain,
    prepare_row,
)
from b2bscore.decisions.writer import AuditWriter
from b2bscore.kit.db import create_engine, create_sessionmaker
from tests.decisions.factories import make_record, new_tenant

REQUESTS = 40


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own, committing for real."""
    engine = create_engine(postgres_url, pool_size=5)
    yield engine
    await engine.dispose()


async def _tenant(engine: AsyncEngine) -> str:
    async with create_sessionmaker(engine)() as session:
        tenant = await new_tenant(session, "writer")
        await session.commit()
        return tenant.id


def _batches() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("b2bscore_audit_batch_rows_count") or 0.0
    rows = REGISTRY.get_sample_value("b2bscore_audit_batch_rows_sum") or 0.0
    return count, rows


async def test_concurrent_rows_share_commits_and_keep_one_chain(
    engine: AsyncEngine, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant_id = await _tenant(engine)
    writer = AuditWriter(create_sessionmaker(engine), keyring, chain_keys)
    batches_before, rows_before = _batches()

    written = await asyncio.gather(
        *(writer.record(make_record(tenant_id, score=i)) for i in range(REQUESTS))
    )

    batches, rows = (a - b for a, b in zip(_batches(), (batches_before, rows_before), strict=True))
    assert rows == REQUESTS
    assert batches < REQUESTS, "concurrent rows were committed together"
    assert sorted(d.seq for d in written) == list(range(1, REQUESTS + 1))
    assert sorted(d.score for d in written) == list(range(REQUESTS))
    async with create_sessionmaker(engine)() as session:
        result = await verify_chain(session, tenant_id, chain_keys=chain_keys)
    assert result.ok
    assert result.rows == REQUESTS


async def test_two_processes_batching_one_tenant_never_collide(
    engine: AsyncEngine, postgres_url: str, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    # Two writers on two engines, as two API workers: each batch reads the chain head
    # under the lock, so no batch may meet the other's seq (a collision would show as rows
    # written one by one after a refused batch, not in the batch counter).
    tenant_id = await _tenant(engine)
    other_engine = create_engine(postgres_url, pool_size=5)
    writers = [
        AuditWriter(create_sessionmaker(engine), keyring, chain_keys),
        AuditWriter(create_sessionmaker(other_engine), keyring, chain_keys),
    ]
    _, rows_before = _batches()
    try:
        for wave in range(5):
            await asyncio.gather(
                *(
                    writer.record(make_record(tenant_id, score=wave * 100 + i))
                    for i in range(REQUESTS // 4)
                    for writer in writers
                )
            )
    finally:
        await other_engine.dispose()

    _, rows = _batches()
    total = 5 * (REQUESTS // 4) * len(writers)
    assert rows - rows_before == total
    async with create_sessionmaker(engine)() as session:
        result = await verify_chain(session, tenant_id, chain_keys=chain_keys)
    assert result.ok
    assert result.rows == total


async def test_same_idempotency_key_in_one_batch_records_once(
    engine: AsyncEngine, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant_id = await _tenant(engine)
    writer = AuditWriter(create_sessionmaker(engine), keyring, chain_keys)

    outcomes = await asyncio.gather(
        *(writer.record(make_record(tenant_id, idempotency_key="retry-1")) for _ in range(5)),
        return_exceptions=True,
    )

    recorded = [o for o in outcomes if not isinstance(o, BaseException)]
    replays = [o for o in outcomes if isinstance(o, IdempotencyConflict)]
    assert len(recorded) == 1
    assert len(replays) == 4
    assert {r.decision_id for r in replays} == {recorded[0].id}


def test_content_encoded_before_the_lock_hashes_as_the_whole_row() -> None:
    keyring = DataKeyring({"k1": bytes(range(32))})
    keys = ChainKeyring({"c1": bytes(range(1, 33))})
    row = prepare_row(make_record("tenant-1", idempotency_key="k-1"), keyring)
    content = RowContent.of(row)
    link_into_chain(row, seq=7, prev_hash="ab" * 32, chain_keys=keys, content=content)
    assert row.chain_key_id == "c1"
    assert row.row_hash == compute_row_hash("ab" * 32, row, keys)
    # The chain's own fields are in the hash: another place gives another hash.
    assert content.row_hash("ab" * 32, row, keys) != compute_row_hash("cd" * 32, row, keys)
    link_into_chain(row, seq=8, prev_hash="ab" * 32, chain_keys=keys, content=content)
    assert row.row_hash == compute_row_hash("ab" * 32, row, keys)


async def test_a_row_the_database_refuses_fails_alone(
    engine: AsyncEngine, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant_id = await _tenant(engine)
    writer = AuditWriter(create_sessionmaker(engine), keyring, chain_keys)
    # JSONB refuses a NUL character: that row cannot be written, its batch mates can.
    bad = make_record(tenant_id, request={"external_reference": "x\u0000y"})

    outcomes = await asyncio.gather(
        writer.record(bad),
        *(writer.record(make_record(tenant_id, score=i)) for i in range(5)),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], AuditUnavailable)
    assert all(isinstance(o, Decision) for o in outcomes[1:])
    async with create_sessionmaker(engine)() as session:
        result = await verify_chain(session, tenant_id, chain_keys=chain_keys)
    assert result.ok
    assert result.rows == 5


async def test_a_connection_killed_before_the_batch_is_retried(
    engine: AsyncEngine, keyring: DataKeyring, chain_keys: ChainKeyring, postgres_admin_dsn: str
) -> None:
    tenant_id = await _tenant(engine)
    writer = AuditWriter(create_sessionmaker(engine), keyring, chain_keys)
    await writer.record(make_record(tenant_id))
    # Kill the pooled connection behind the writer's back, as a database restart would.
    async with engine.connect() as connection:
        pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()

    row = await writer.record(make_record(tenant_id, score=2))

    assert row.seq == 2
    async with create_sessionmaker(engine)() as session:
        assert (await verify_chain(session, tenant_id, chain_keys=chain_keys)).ok


async def test_huge_integral_floats_verify_after_the_jsonb_round_trip(
    engine: AsyncEngine, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant_id = await _tenant(engine)
    writer = AuditWriter(create_sessionmaker(engine), keyring, chain_keys)
    # JSONB hands these back as integers (signed or unsigned 64-bit), or as floats.
    features = {"a": 1e16, "b": 1e19, "c": -9.2e18, "d": 1e20, "e": 0.5}
    await writer.record(make_record(tenant_id, features=features))
    async with create_sessionmaker(engine)() as session:
        result = await verify_chain(session, tenant_id, chain_keys=chain_keys)
    assert result.ok, result.broken
