"""Typed queries over watched companies, monitoring rules and batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.portfolio.models import Batch, BatchRow, MonitoredCompany, MonitoringRules


class PortfolioRepository:
    """Reads of the portfolio domain; every read of a tenant's object checks tenant and mode."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def monitored(self, tenant_id: str, mode: str, item_id: str) -> MonitoredCompany | None:
        """One watched company of the tenant in mode, or None."""
        row = await self.session.get(MonitoredCompany, item_id)
        if row is None or row.tenant_id != tenant_id or row.mode != mode:
            return None
        return row

    async def monitored_page(
        self, tenant_id: str, mode: str, limit: int, after: tuple[datetime, str] | None
    ) -> Sequence[MonitoredCompany]:
        """Watched companies, newest first, after a (created_at, id) cursor."""
        query = (
            select(MonitoredCompany)
            .where(MonitoredCompany.tenant_id == tenant_id, MonitoredCompany.mode == mode)
            .order_by(MonitoredCompany.created_at.desc(), MonitoredCompany.id.desc())
            .limit(limit)
        )
        if after is not None:
            created_at, item_id = after
            query = query.where(
                (MonitoredCompany.created_at < created_at)
                | ((MonitoredCompany.created_at == created_at) & (MonitoredCompany.id < item_id))
            )
        return (await self.session.scalars(query)).all()

    async def count_monitored(self, tenant_id: str, mode: str) -> int:
        """How many companies the tenant watches in mode."""
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(MonitoredCompany)
                .where(MonitoredCompany.tenant_id == tenant_id, MonitoredCompany.mode == mode)
            )
            or 0
        )

    async def monitored_ids(
        self, after: str | None, limit: int, siren: str | None = None
    ) -> list[str]:
        """Ids of every watched company (all tenants), in id order, for sweeps."""
        query = select(MonitoredCompany.id).order_by(MonitoredCompany.id).limit(limit)
        if after is not None:
            query = query.where(MonitoredCompany.id > after)
        if siren is not None:
            query = query.where(MonitoredCompany.siren == siren)
        return list((await self.session.scalars(query)).all())

    async def rules(self, tenant_id: str, mode: str) -> MonitoringRules | None:
        """The tenant's rules in mode, if it set any."""
        return await self.session.get(MonitoringRules, (tenant_id, mode))

    async def batch(self, tenant_id: str, mode: str, batch_id: str) -> Batch | None:
        """One batch of the tenant in mode, or None."""
        row = await self.session.get(Batch, batch_id)
        if row is None or row.tenant_id != tenant_id or row.mode != mode:
            return None
        return row

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        """Rows of a batch by status."""
        rows = await self.session.execute(
            select(BatchRow.status, func.count())
            .where(BatchRow.batch_id == batch_id)
            .group_by(BatchRow.status)
        )
        return {status: int(count) for status, count in rows.all()}

    async def pending_rows(self, batch_id: str, limit: int) -> Sequence[BatchRow]:
        """The next rows of a batch still without an outcome, in file order."""
        return (
            await self.session.scalars(
                select(BatchRow)
                .where(BatchRow.batch_id == batch_id, BatchRow.status == "pending")
                .order_by(BatchRow.row_number)
                .limit(limit)
            )
        ).all()

    async def rows_after(self, batch_id: str, after: int, limit: int) -> Sequence[BatchRow]:
        """Rows of a batch in file order after a row number (for the results download)."""
        return (
            await self.session.scalars(
                select(BatchRow)
                .where(BatchRow.batch_id == batch_id, BatchRow.row_number > after)
                .order_by(BatchRow.row_number)
                .limit(limit)
            )
        ).all()
