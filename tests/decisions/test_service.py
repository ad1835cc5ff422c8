"""Recording decisions, tenant scoping, the hash chain and the append-only trigger."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from b2bscore.decisions.chain import GENESIS_HASH, compute_row_hash, verify_chain
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring, DecryptionError
from b2bscore.decisions.models import Decision
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.decisions.service import (
    AuditUnavailable,
    IdempotencyConflict,
    open_payloads,
    record_decision,
)
from tests.decisions.factories import make_record, new_tenant


async def _reload(session: AsyncSession, tenant_id: str, decision_id: str) -> Decision:
    session.expunge_all()
    row = await DecisionRepository(session).get(tenant_id, decision_id)
    assert row is not None
    return row


def _as_unkeyed(row: Decision) -> Decision:
    copy = Decision(**{c.key: getattr(row, c.key) for c in Decision.__table__.columns})
    copy.chain_key_id = None
    return copy


async def test_recorded_decision_reads_back_exactly(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant = await new_tenant(db_session)
    record = make_record(tenant.id, idempotency_key="idem-1")
    written = await record_decision(
        db_session, record=record, keyring=keyring, chain_keys=chain_keys
    )
    row = await _reload(db_session, tenant.id, written.id)

    assert row.seq == 1
    assert row.prev_hash == GENESIS_HASH
    assert row.created_at.tzinfo is not None
    assert row.created_at == written.created_at
    assert row.requested_amount == Decimal("25000.00")
    assert row.proposed_limit == Decimal("20000.00")
    assert float(row.probability_of_default) == record.probability_of_default
    assert row.features["missing"] is None
    assert row.features["equity"] == "120000.50"
    assert row.sources["registry"]["status"] == "timeout"
    assert row.payload_ciphertext is not None
    assert b"resourceId" not in row.payload_ciphertext
    assert row.chain_key_id == "c1"
    assert compute_row_hash(row.prev_hash, row, chain_keys) == row.row_hash
    # Keyed: the project's own hash function without the key does not give the link.
    unkeyed = compute_row_hash(row.prev_hash, _as_unkeyed(row))
    assert unkeyed != row.row_hash
    other_keys = ChainKeyring({"c1": bytes(32)})
    assert compute_row_hash(row.prev_hash, row, other_keys) != row.row_hash
    assert open_payloads(row, keyring) == {
        "open_banking": {"accounts": [{"resourceId": "abc", "balance": "12.30"}]}
    }
    other_keyring = DataKeyring({"k1": bytes(32)})
    with pytest.raises(DecryptionError):
        open_payloads(row, other_keyring)


async def test_reads_are_scoped_to_the_tenant(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant, other = await new_tenant(db_session), await new_tenant(db_session)
    written = await record_decision(
        db_session,
        record=make_record(tenant.id, idempotency_key="k"),
        keyring=keyring,
        chain_keys=chain_keys,
    )
    repository = DecisionRepository(db_session)
    assert (await repository.get(tenant.id, written.id)) is not None
    assert (await repository.get(other.id, written.id)) is None
    assert (await repository.get_by_idempotency_key(other.id, "test", "k")) is None
    assert (await repository.get_by_idempotency_key(tenant.id, "test", "k")) is not None
    assert list(await repository.list(other.id)) == []


async def test_chain_links_every_row_of_a_tenant(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant, other = await new_tenant(db_session), await new_tenant(db_session)
    rows = []
    for i in range(4):
        rows.append(
            await record_decision(
                db_session, record=make_record(tenant.id), keyring=keyring, chain_keys=chain_keys
            )
        )
        # Another tenant's rows interleave but start their own chain.
        await record_decision(
            db_session,
            record=make_record(other.id, score=500 + i),
            keyring=keyring,
            chain_keys=chain_keys,
        )
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert [r.prev_hash for r in rows[1:]] == [r.row_hash for r in rows[:-1]]
    result = await verify_chain(db_session, tenant.id, chain_keys=chain_keys)
    assert result.ok
    assert result.rows == 4
    assert result.tenants == 1
    everything = await verify_chain(db_session, chain_keys=chain_keys)
    assert everything.tenants >= 2
    assert {(tenant.id, "test"), (other.id, "test")} <= set(everything.heads)
    # The session's database also holds rows that whole apps of other tests linked with
    # their own audit keys; only this test's chains must verify under this key.
    assert not {b.tenant_id for b in everything.broken} & {tenant.id, other.id}


async def test_listing_filters_and_paginates(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant = await new_tenant(db_session)
    for i in range(5):
        await record_decision(
            db_session,
            record=make_record(
                tenant.id, siren="732829320" if i % 2 else "552100554", decision="review"
            ),
            keyring=keyring,
            chain_keys=chain_keys,
        )
    repository = DecisionRepository(db_session)
    page = await repository.list(tenant.id, limit=2)
    assert [d.seq for d in page] == [5, 4]
    page = await repository.list(tenant.id, limit=2, after=page[-1].seq)
    assert [d.seq for d in page] == [3, 2]
    assert [d.seq for d in await repository.list(tenant.id, siren="732829320")] == [4, 2]
    assert await repository.list(tenant.id, decision="approve") == []
    first = (await repository.list(tenant.id, limit=5))[-1]
    since = await repository.list(tenant.id, created_from=first.created_at)
    assert len(since) == 5
    assert await repository.list(tenant.id, created_to=first.created_at) == []


async def test_idempotency_key_conflict_names_the_existing_decision(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant = await new_tenant(db_session)
    first = await record_decision(
        db_session,
        record=make_record(tenant.id, idempotency_key="order-42"),
        keyring=keyring,
        chain_keys=chain_keys,
    )
    with pytest.raises(IdempotencyConflict) as caught:
        await record_decision(
            db_session,
            record=make_record(tenant.id, idempotency_key="order-42"),
            keyring=keyring,
            chain_keys=chain_keys,
        )
    assert caught.value.decision_id == first.id
    # The session is usable afterwards and the chain did not move.
    second = await record_decision(
        db_session, record=make_record(tenant.id), keyring=keyring, chain_keys=chain_keys
    )
    assert second.seq == 2


async def test_tampering_is_named_by_verification(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant = await new_tenant(db_session)
    rows = [
        await record_decision(
            db_session, record=make_record(tenant.id), keyring=keyring, chain_keys=chain_keys
        )
        for _ in range(3)
    ]
    # Bypass the append-only trigger as only a superuser could, for this transaction.
    await db_session.execute(text("SET LOCAL session_replication_role = replica"))
    await db_session.execute(
        text("UPDATE decisions SET score = 999, decision = 'approve' WHERE id = :id"),
        {"id": rows[1].id},
    )
    await db_session.execute(text("SET LOCAL session_replication_role = origin"))
    result = await verify_chain(db_session, tenant.id, chain_keys=chain_keys)
    assert not result.ok
    [broken] = result.broken
    assert (broken.decision_id, broken.seq, broken.reason) == (rows[1].id, 2, "row_hash")


async def test_a_deleted_row_breaks_the_link(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant = await new_tenant(db_session)
    rows = [
        await record_decision(
            db_session, record=make_record(tenant.id), keyring=keyring, chain_keys=chain_keys
        )
        for _ in range(3)
    ]
    await db_session.execute(text("SET LOCAL session_replication_role = replica"))
    await db_session.execute(text("DELETE FROM decisions WHERE id = :id"), {"id": rows[1].id})
    await db_session.execute(text("SET LOCAL session_replication_role = origin"))
    [broken] = (await verify_chain(db_session, tenant.id, chain_keys=chain_keys)).broken
    assert (broken.decision_id, broken.reason) == (rows[2].id, "seq_gap")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE decisions SET score = 1 WHERE id = :id",
        "UPDATE decisions SET payload_ciphertext = NULL, payload_nonce = NULL, score = 1 "
        "WHERE id = :id",
        "UPDATE decisions SET payload_ciphertext = '\\x00'::bytea WHERE id = :id",
        "UPDATE decisions SET payload_ciphertext = NULL WHERE id = :id",
        "DELETE FROM decisions WHERE id = :id",
    ],
)
async def test_trigger_refuses_changes(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring, statement: str
) -> None:
    tenant = await new_tenant(db_session)
    row = await record_decision(
        db_session, record=make_record(tenant.id), keyring=keyring, chain_keys=chain_keys
    )
    with pytest.raises(DBAPIError, match="append-only"):
        async with db_session.begin_nested():
            await db_session.execute(text(statement), {"id": row.id})


async def test_trigger_refuses_truncate(db_session: AsyncSession) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        async with db_session.begin_nested():
            await db_session.execute(text("TRUNCATE decisions CASCADE"))


async def test_retention_purge_keeps_the_chain(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant = await new_tenant(db_session)
    rows = [
        await record_decision(
            db_session, record=make_record(tenant.id), keyring=keyring, chain_keys=chain_keys
        )
        for _ in range(2)
    ]
    await db_session.execute(
        text("UPDATE decisions SET payload_ciphertext = NULL, payload_nonce = NULL WHERE id = :id"),
        {"id": rows[0].id},
    )
    assert (await verify_chain(db_session, tenant.id, chain_keys=chain_keys)).ok
    purged = await _reload(db_session, tenant.id, rows[0].id)
    assert purged.payload_ciphertext is None
    assert open_payloads(purged, keyring) is None


async def test_database_failure_is_audit_unavailable(
    keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    engine = create_async_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:1/none", connect_args={"timeout": 1}
    )
    try:
        async with AsyncSession(engine) as session:
            with pytest.raises(AuditUnavailable):
                await record_decision(
                    session, record=make_record("t"), keyring=keyring, chain_keys=chain_keys
                )
    finally:
        await engine.dispose()


async def test_unknown_tenant_is_audit_unavailable(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    with pytest.raises(AuditUnavailable):
        await record_decision(
            db_session,
            record=make_record("00000000-0000-0000-0000-000000000000"),
            keyring=keyring,
            chain_keys=chain_keys,
        )


async def test_money_with_fractions_of_cents_is_refused(
    db_session: AsyncSession, keyring: DataKeyring, chain_keys: ChainKeyring
) -> None:
    tenant = await new_tenant(db_session)
    with pytest.raises(ValueError, match="decimals"):
        await record_decision(
            db_session,
            record=make_record(tenant.id, requested_amount=Decimal("10.005")),
            keyring=keyring,
            chain_keys=chain_keys,
        )
