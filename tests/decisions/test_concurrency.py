"""Concurrent writers of one tenant's chain, each with its own session (real commits)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.decisions.chain import verify_chain
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.models import Decision
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.decisions.service import IdempotencyConflict, record_decision
from b2bscore.kit.db import create_engine, create_sessionmaker
from tests.decisions.factories import make_record, new_tenant

WRITERS = 20


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine with a connection for every writer, so none waits on the pool."""
    engine = create_engine(postgres_url, pool_size=WRITERS)
    yield engine
    await engine.dispose()


async def _committed_tenant(engine: AsyncEngine) -> str:
    # Committed for real: the audit rows cannot be deleted afterwards (append-only), and
    # they stay in this test session's throwaway database.
    async with create_sessionmaker(engine)() as session:
        tenant = await new_tenant(session, "concurrent")
        await session.commit()
        return tenant.id


async def test_concurrent_writers_cannot_fork_the_chain(
    engine: AsyncEngine, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant_id = await _committed_tenant(engine)
    sessionmaker = create_sessionmaker(engine)
    start = asyncio.Event()

    async def write(i: int) -> Decision:
        async with sessionmaker() as session:
            await start.wait()
            return await record_decision(
                session,
                record=make_record(tenant_id, score=i),
                keyring=keyring,
                chain_keys=chain_keys,
            )

    tasks = [asyncio.create_task(write(i)) for i in range(WRITERS)]
    start.set()
    written = await asyncio.gather(*tasks)

    assert sorted(d.seq for d in written) == list(range(1, WRITERS + 1))
    async with sessionmaker() as session:
        result = await verify_chain(session, tenant_id, chain_keys=chain_keys)
        assert result.ok
        assert result.rows == WRITERS
        chain = [d async for d in DecisionRepository(session).iter_chain(tenant_id, batch=7)]
    assert [d.seq for d in chain] == list(range(1, WRITERS + 1))


async def test_concurrent_retries_record_one_decision(
    engine: AsyncEngine, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant_id = await _committed_tenant(engine)
    sessionmaker = create_sessionmaker(engine)

    async def write() -> str:
        async with sessionmaker() as session:
            try:
                decision = await record_decision(
                    session,
                    record=make_record(tenant_id, idempotency_key="retry"),
                    keyring=keyring,
                    chain_keys=chain_keys,
                )
            except IdempotencyConflict as conflict:
                return conflict.decision_id
            return decision.id

    ids = await asyncio.gather(*(write() for _ in range(8)))
    assert len(set(ids)) == 1
    async with sessionmaker() as session:
        assert len(await DecisionRepository(session).list(tenant_id)) == 1
