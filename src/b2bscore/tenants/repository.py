"""Typed queries on tenants and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.tenants.models import ApiKey, Tenant


class TenantRepository:
    """Tenant lookups."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""
        return await self.session.get(Tenant, tenant_id)

    async def get_by_name(self, name: str) -> Tenant | None:
        """The tenant with this name, or None."""
        result = await self.session.execute(select(Tenant).where(Tenant.name == name))
        return result.scalar_one_or_none()

    async def ids(self) -> Sequence[str]:
        """Every tenant's id, in order."""
        return (await self.session.execute(select(Tenant.id).order_by(Tenant.id))).scalars().all()


class ApiKeyRepository:
    """API key lookups and the last-used stamp."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, key_id: str, *, tenant_id: str | None = None) -> ApiKey | None:
        """The key with this id (restricted to tenant_id when given), or None."""
        statement = select(ApiKey).where(ApiKey.id == key_id)
        if tenant_id is not None:
            statement = statement.where(ApiKey.tenant_id == tenant_id)
        result = await self.session.execute(statement)
        return result.scalar_one_or_none()

    async def get_with_tenant_by_hash(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        """The key with this hash and its tenant, in one indexed query."""
        statement = (
            select(ApiKey, Tenant)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.key_hash == key_hash)
        )
        row = (await self.session.execute(statement)).one_or_none()
        if row is None:
            return None
        return row[0], row[1]

    async def list_for_tenant(self, tenant_id: str) -> Sequence[ApiKey]:
        """Every key of the tenant, oldest first."""
        statement = (
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant_id)
            .order_by(ApiKey.created_at, ApiKey.id)
        )
        return (await self.session.execute(statement)).scalars().all()

    async def touch(
        self, key_id: str, when: datetime, *, unless_since: datetime | None = None
    ) -> None:
        """Record that the key was used at when (unless already stamped since unless_since)."""
        statement = update(ApiKey).where(ApiKey.id == key_id)
        if unless_since is not None:
            # Concurrent first requests of a key all saw a stale stamp: only the first
            # writes, the others wait for its commit and then change nothing, instead of
            # each waiting in turn for the previous one's write and commit.
            statement = statement.where(
                (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < unless_since)
            )
        await self.session.execute(
            statement.values(last_used_at=when).execution_options(synchronize_session=False)
        )
