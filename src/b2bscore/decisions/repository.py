"""Typed queries on the audit store; every read is scoped to one tenant."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.models import Decision


class DecisionRepository:
    """Reads of decisions; writes go through decisions.service.record_decision."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(
        self, tenant_id: str, decision_id: str, *, mode: str | None = None
    ) -> Decision | None:
        """The tenant's decision with this id, of this mode when given; None otherwise.

        The API always passes the caller's mode: another mode's decision is as unknown as
        another tenant's.
        """
        statement = select(Decision).where(
            Decision.tenant_id == tenant_id, Decision.id == decision_id
        )
        if mode is not None:
            statement = statement.where(Decision.mode == mode)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_by_idempotency_key(self, tenant_id: str, mode: str, key: str) -> Decision | None:
        """The tenant's decision recorded under this idempotency key in this mode, or None."""
        statement = select(Decision).where(
            Decision.tenant_id == tenant_id,
            Decision.mode == mode,
            Decision.idempotency_key == key,
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def list(
        self,
        tenant_id: str,
        *,
        mode: str | None = None,
        siren: str | None = None,
        decision: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 50,
        after: int | None = None,
    ) -> Sequence[Decision]:
        """The tenant's decisions (of one mode when given), newest first, those with seq < after.

        seq grows with created_at within a tenant, so keyset pagination on it is stable
        under concurrent inserts and needs no offset.
        """
        statement = select(Decision).where(Decision.tenant_id == tenant_id)
        if mode is not None:
            statement = statement.where(Decision.mode == mode)
        if siren is not None:
            statement = statement.where(Decision.siren == siren)
        if decision is not None:
            statement = statement.where(Decision.decision == decision)
        if created_from is not None:
            statement = statement.where(Decision.created_at >= created_from)
        if created_to is not None:
            statement = statement.where(Decision.created_at < created_to)
        if after is not None:
            statement = statement.where(Decision.seq < after)
        statement = statement.order_by(Decision.seq.desc()).limit(limit)
        return (await self.session.execute(statement)).scalars().all()

    async def chain_head(self, tenant_id: str) -> tuple[int, str] | None:
        """(seq, row_hash) of the tenant's last decision, or None before the first."""
        statement = (
            select(Decision.seq, Decision.row_hash)
            .where(Decision.tenant_id == tenant_id)
            .order_by(Decision.seq.desc())
            .limit(1)
        )
        row = (await self.session.execute(statement)).one_or_none()
        return None if row is None else (row[0], row[1])

    async def tenant_ids(self) -> Sequence[str]:
        """Every tenant with at least one decision."""
        statement = select(Decision.tenant_id).distinct().order_by(Decision.tenant_id)
        return (await self.session.execute(statement)).scalars().all()

    async def iter_chain(
        self, tenant_id: str, *, batch: int = 500
    ) -> AsyncGenerator[Decision, None]:
        """The tenant's decisions in seq order, read from the database in batches."""
        last_seq = 0
        while True:
            statement = (
                select(Decision)
                .where(Decision.tenant_id == tenant_id, Decision.seq > last_seq)
                .order_by(Decision.seq)
                .limit(batch)
                # Verification must see what the database holds, not objects this
                # session loaded or wrote earlier.
                .execution_options(populate_existing=True)
            )
            rows = (await self.session.execute(statement)).scalars().all()
            for row in rows:
                yield row
            if len(rows) < batch:
                return
            last_seq = rows[-1].seq
