"""Typed access to uploaded books."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.books.models import CompanyBooks


class BooksRepository:
    """Uploaded books of one session; every query is scoped to a tenant and a mode."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, books: CompanyBooks) -> CompanyBooks:
        """Insert one uploaded file (flushed, not committed)."""
        self.session.add(books)
        await self.session.flush()
        return books

    async def newest(
        self, tenant_id: str, mode: str, siren: str, limit: int
    ) -> Sequence[CompanyBooks]:
        """The newest uploads of a company, newest fiscal year first, newest upload first."""
        query = (
            sa.select(CompanyBooks)
            .where(
                CompanyBooks.tenant_id == tenant_id,
                CompanyBooks.mode == mode,
                CompanyBooks.siren == siren,
            )
            .order_by(CompanyBooks.closing_date.desc(), CompanyBooks.created_at.desc())
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()
