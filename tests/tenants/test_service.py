"""Tenants, key lifecycle and authentication on the real PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from b2bscore.tenants.keys import MAX_KEY_LENGTH, generate_key, hash_key
from b2bscore.tenants.models import ApiKey
from b2bscore.tenants.service import (
    Principal,
    authenticate,
    create_api_key,
    create_tenant,
    list_api_keys,
    revoke_api_key,
)


def _name() -> str:
    return f"lender-{secrets.token_hex(6)}"


async def test_create_tenant_gets_or_creates(db_session: AsyncSession) -> None:
    name = _name()
    first = await create_tenant(db_session, name)
    second = await create_tenant(db_session, name)
    assert first.id == second.id
    assert first.created_at.tzinfo is not None


async def test_only_the_hash_of_a_key_is_stored(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    api_key, plaintext = await create_api_key(
        db_session, tenant, "live", ["score:write", "decisions:read"], name="checkout"
    )
    assert plaintext.startswith("sk_live_")
    row = (
        await db_session.execute(
            select(ApiKey).where(ApiKey.id == api_key.id).execution_options(populate_existing=True)
        )
    ).scalar_one()
    assert row.key_hash == hash_key(plaintext)
    assert row.prefix == plaintext[:12]
    stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert not any(plaintext in value for value in stored)
    assert row.scopes == ["decisions:read", "score:write"]


async def test_authenticate_returns_the_principal(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    tenant.rate_limit_per_minute = 120
    api_key, plaintext = await create_api_key(db_session, tenant, "test", ["decisions:read"])
    principal = await authenticate(db_session, plaintext)
    assert principal == Principal(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        key_id=api_key.id,
        mode="test",
        scopes=frozenset({"decisions:read"}),
        rate_limit_per_minute=120,
    )
    assert principal.has_scope("decisions:read")
    assert not principal.has_scope("score:write")
    await db_session.refresh(api_key)
    assert api_key.last_used_at is not None


async def test_admin_scope_carries_every_scope(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    _, plaintext = await create_api_key(db_session, tenant, "test", ["admin"])
    principal = await authenticate(db_session, plaintext)
    assert principal is not None
    assert principal.has_scope("score:write")
    assert principal.has_scope("decisions:read")


async def test_revoked_keys_are_refused(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    api_key, plaintext = await create_api_key(db_session, tenant, "test", ["score:write"])
    revoked = await revoke_api_key(db_session, api_key.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    first_revocation = revoked.revoked_at
    assert (await revoke_api_key(db_session, api_key.id)) is not None
    assert revoked.revoked_at == first_revocation
    assert await authenticate(db_session, plaintext) is None
    assert await revoke_api_key(db_session, "no-such-key") is None


async def test_revocation_can_be_scoped_to_a_tenant(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    other = await create_tenant(db_session, _name())
    api_key, _ = await create_api_key(db_session, tenant, "test", ["score:write"])
    assert await revoke_api_key(db_session, api_key.id, tenant_id=other.id) is None
    assert api_key.revoked_at is None


async def test_expired_keys_are_refused(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    _, expired = await create_api_key(
        db_session, tenant, "test", ["score:write"], expires_at=datetime.now(UTC) - timedelta(1)
    )
    _, valid = await create_api_key(
        db_session, tenant, "test", ["score:write"], expires_at=datetime.now(UTC) + timedelta(1)
    )
    assert await authenticate(db_session, expired) is None
    assert await authenticate(db_session, valid) is not None


async def test_unknown_keys_are_refused(db_session: AsyncSession) -> None:
    assert await authenticate(db_session, generate_key("live")) is None


@pytest.mark.parametrize(
    "presented",
    ["sk_prod_" + "a" * 43, "sk_test_" + "a" * MAX_KEY_LENGTH, "sk_test_a b", "", "sk_test_"],
)
async def test_malformed_keys_are_refused_without_the_database(presented: str) -> None:
    # A session on a port where nothing listens: any query would raise.
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        async with AsyncSession(engine) as session:
            assert await authenticate(session, presented) is None
    finally:
        await engine.dispose()


async def test_list_api_keys_is_per_tenant(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    other = await create_tenant(db_session, _name())
    first, _ = await create_api_key(db_session, tenant, "test", ["score:write"])
    second, _ = await create_api_key(db_session, tenant, "live", ["decisions:read"])
    await create_api_key(db_session, other, "test", ["score:write"])
    keys = await list_api_keys(db_session, tenant.id)
    assert {k.id for k in keys} == {first.id, second.id}


async def test_unknown_scopes_and_modes_are_refused(db_session: AsyncSession) -> None:
    tenant = await create_tenant(db_session, _name())
    with pytest.raises(ValueError, match="scopes"):
        await create_api_key(db_session, tenant, "test", ["score:write", "root"])
    with pytest.raises(ValueError, match="at least one"):
        await create_api_key(db_session, tenant, "test", [])
    with pytest.raises(ValueError, match="mode"):
        await create_api_key(db_session, tenant, "prod", ["score:write"])
