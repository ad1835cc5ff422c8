"""Uploaded books: a lender's FEC file of one company, encrypted at rest."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from b2bscore.kit.db import Base
from b2bscore.tenants.models import UTCDateTime, new_id


class CompanyBooks(Base):
    """One FEC file (one fiscal year) uploaded by a tenant, for one mode, in ciphertext."""

    __tablename__ = "company_books"
    __table_args__ = (
        sa.Index("ix_company_books_lookup", "tenant_id", "mode", "siren", "closing_date"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("tenants.id", name="fk_company_books_tenant_id")
    )
    # test and live books never mix: a sandbox decision must not read live books.
    mode: Mapped[str] = mapped_column(sa.String(8))
    siren: Mapped[str] = mapped_column(sa.String(9))
    closing_date: Mapped[date] = mapped_column(sa.Date)
    file_name: Mapped[str] = mapped_column(sa.String(255))
    size_bytes: Mapped[int] = mapped_column(sa.Integer)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    lines: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(sa.String(64))
    nonce: Mapped[bytes] = mapped_column(sa.LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(sa.LargeBinary)
