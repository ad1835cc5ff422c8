"""Typed queries on the audit store; every read is scoped to one tenant."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select
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
        grade: str | None = None,
    ) -> Sequence[Decision]:
        """The tenant's decisions (of one mode when given), newest first, those with seq < after.

        seq grows with created_at within a chain (tenant and mode), so keyset pagination on
        it is stable under concurrent inserts and needs no offset.
        """
        statement = select(Decision).where(Decision.tenant_id == tenant_id)
        if mode is not None:
            statement = statement.where(Decision.mode == mode)
        if siren is not None:
            statement = statement.where(Decision.siren == siren)
        if decision is not None:
            statement = statement.where(Decision.decision == decision)
        if grade is not None:
            statement = statement.where(Decision.grade == grade)
        if created_from is not None:
            statement = statement.where(Decision.created_at >= created_from)
        if created_to is not None:
            statement = statement.where(Decision.created_at < created_to)
        if after is not None:
            statement = statement.where(Decision.seq < after)
        statement = statement.order_by(Decision.seq.desc()).limit(limit)
        return (await self.session.execute(statement)).scalars().all()

    async def chain_head(self, tenant_id: str, mode: str) -> tuple[int, str] | None:
        """(seq, row_hash) of the last decision of the tenant's chain of this mode, or None."""
        statement = (
            select(Decision.seq, Decision.row_hash)
            .where(Decision.tenant_id == tenant_id, Decision.mode == mode)
            .order_by(Decision.seq.desc())
            .limit(1)
        )
        row = (await self.session.execute(statement)).one_or_none()
        return None if row is None else (row[0], row[1])

    async def outcomes_since(
        self, tenant_id: str, mode: str, since: datetime, *, limit: int
    ) -> Sequence[tuple[float, str, int, bool]]:
        """(latency_ms, decision, score, degraded) of the tenant's newest decisions since."""
        statement = (
            select(Decision.latency_ms, Decision.decision, Decision.score, Decision.degraded)
            .where(
                Decision.tenant_id == tenant_id,
                Decision.mode == mode,
                Decision.created_at >= since,
            )
            .order_by(Decision.seq.desc())
            .limit(limit)
        )
        rows = (await self.session.execute(statement)).all()
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    async def chain_heads(self) -> Sequence[tuple[str, str, int, str]]:
        """(tenant_id, mode, seq, row_hash) of the last row of every chain."""
        last = (
            select(Decision.tenant_id, Decision.mode, func.max(Decision.seq).label("seq"))
            .group_by(Decision.tenant_id, Decision.mode)
            .subquery()
        )
        statement = (
            select(Decision.tenant_id, Decision.mode, Decision.seq, Decision.row_hash)
            .join(
                last,
                and_(
                    Decision.tenant_id == last.c.tenant_id,
                    Decision.mode == last.c.mode,
                    Decision.seq == last.c.seq,
                ),
            )
            .order_by(Decision.tenant_id, Decision.mode)
        )
        rows = (await self.session.execute(statement)).all()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def at_seq(self, tenant_id: str, mode: str, seq: int) -> Decision | None:
        """The row at seq of the tenant's chain of this mode, or None."""
        statement = select(Decision).where(
            Decision.tenant_id == tenant_id, Decision.mode == mode, Decision.seq == seq
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def keyed_before(self, tenant_id: str, mode: str, seq: int) -> bool:
        """True when a keyed row precedes seq in the tenant's chain of this mode."""
        statement = (
            select(Decision.id)
            .where(
                Decision.tenant_id == tenant_id,
                Decision.mode == mode,
                Decision.seq < seq,
                Decision.chain_key_id.is_not(None),
            )
            .limit(1)
        )
        return (await self.session.execute(statement)).first() is not None

    async def tenant_ids(self) -> Sequence[str]:
        """Every tenant with at least one decision."""
        statement = select(Decision.tenant_id).distinct().order_by(Decision.tenant_id)
        return (await self.session.execute(statement)).scalars().all()

    async def modes(self, tenant_id: str) -> Sequence[str]:
        """The modes in which the tenant has decisions (one chain each)."""
        statement = (
            select(Decision.mode)
            .where(Decision.tenant_id == tenant_id)
            .distinct()
            .order_by(Decision.mode)
        )
        return (await self.session.execute(statement)).scalars().all()

    async def iter_chain(
        self,
        tenant_id: str,
        *,
        mode: str | None = None,
        keyed: bool | None = None,
        batch: int = 500,
    ) -> AsyncGenerator[Decision, None]:
        """The tenant's decisions (of one mode, keyed or not) in seq order, in batches.

        Paged on (seq, id), not seq alone: rows of both modes may share a seq, and a
        forged duplicate must not fall between two pages unseen.
        """
        last: tuple[int, str] | None = None
        while True:
            statement = select(Decision).where(Decision.tenant_id == tenant_id)
            if mode is not None:
                statement = statement.where(Decision.mode == mode)
            if keyed is not None:
                key = Decision.chain_key_id
                statement = statement.where(key.is_not(None) if keyed else key.is_(None))
            if last is not None:
                statement = statement.where(
                    or_(
                        Decision.seq > last[0],
                        and_(Decision.seq == last[0], Decision.id > last[1]),
                    )
                )
            statement = (
                statement.order_by(Decision.seq, Decision.id)
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
            last = (rows[-1].seq, rows[-1].id)
