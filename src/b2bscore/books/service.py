"""Uploaded books: validate a FEC, store it encrypted for its tenant and mode, read it back.

The file is stored as received (zlib-compressed, then AES-256-GCM under the audit store's
data keys, bound to tenant, mode, SIREN and row id), so that what a decision read can be
traced to the exact upload. The accounting source asks ``uploaded_reader`` first: the newest
upload per fiscal year wins over the accounting provider.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.books.models import CompanyBooks
from b2bscore.books.repository import BooksRepository
from b2bscore.books.schemas import BooksOut
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.kit.cache import Cache
from b2bscore.kit.db import SessionOpener, opened_session
from b2bscore.kit.problems import Problem
from b2bscore.sources import accounting
from b2bscore.sources.cache import cache_key, forget
from b2bscore.sources.fec import FecError, closing_date_of
from b2bscore.sources.types import SourceName
from b2bscore.tenants.models import new_id

log = logging.getLogger(__name__)

MAX_FILE_NAME = 255


def books_aad(tenant_id: str, mode: str, siren: str, books_id: str) -> bytes:
    """Associated data binding a stored file to its tenant, mode, company and row."""
    return f"b2bscore.books.v1|{tenant_id}|{mode}|{siren}|{books_id}".encode()


def books_namespace(tenant_id: str, mode: str) -> str:
    """The source-cache namespace of a tenant's accounting data in one mode."""
    return f"{mode}:{tenant_id}"


def _invalid_file(error: FecError) -> Problem:
    where = {"line": error.line, "column": error.column}
    field = f"body (line {error.line}" + (f", column {error.column})" if error.column else ")")
    return Problem(
        422,
        "invalid_fec",
        "Invalid FEC file",
        str(error),
        errors=[{"field": field, "message": error.message, "type": "fec", **where}],
    )


def _money(value: Any) -> str:
    return f"{value:f}"


async def upload_books(
    session: AsyncSession,
    *,
    keyring: DataKeyring,
    cache: Cache,
    tenant_id: str,
    mode: str,
    siren: str,
    raw: bytes,
    file_name: str | None,
) -> BooksOut:
    """Validate and store one FEC; a bad file raises a 422 problem and stores nothing."""
    try:
        books = accounting.read_fec(raw, file_name)
    except FecError as error:
        raise _invalid_file(error) from None
    statement = accounting.statement_of_books(books)
    name = (file_name or f"{siren}FEC{books.closing_date:%Y%m%d}.txt")[:MAX_FILE_NAME]
    if closing_date_of(name) is None:
        name = f"{siren}FEC{books.closing_date:%Y%m%d}.txt"
    row_id = new_id()
    key_id, nonce, ciphertext = keyring.encrypt(
        zlib.compress(raw, 6), books_aad(tenant_id, mode, siren, row_id)
    )
    row = await BooksRepository(session).add(
        CompanyBooks(
            id=row_id,
            tenant_id=tenant_id,
            mode=mode,
            siren=siren,
            closing_date=books.closing_date,
            file_name=name,
            size_bytes=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
            lines=books.lines,
            created_at=datetime.now(UTC),
            key_id=key_id,
            nonce=nonce,
            ciphertext=ciphertext,
        )
    )
    await session.commit()
    # The next decision must read these books, not the provider's answer cached earlier:
    # dropped here and in this process; other workers see it within their local trust.
    namespace = books_namespace(tenant_id, mode)
    forget(namespace, SourceName.ACCOUNTING, siren)
    try:
        await cache.delete(cache_key(namespace, SourceName.ACCOUNTING, siren))
    except (RedisError, OSError):
        # The books are stored; the cached provider answer expires within its freshness.
        log.warning("books upload: cache invalidation failed")
    return BooksOut(
        id=row.id,
        siren=siren,
        mode=mode,
        file_name=row.file_name,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        created_at=row.created_at,
        closing_date=books.closing_date,
        fiscal_year=statement.fiscal_year,
        lines=books.lines,
        entries=books.entries,
        balanced=books.balanced,
        revenue=_money(statement.revenue),
        result=_money(statement.net_income),
        equity=_money(statement.equity),
        total_assets=_money(statement.total_assets),
        total_liabilities=_money(statement.total_liabilities),
    )


def _text(raw: bytes) -> str:
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def read_uploaded(
    session: AsyncSession, keyring: DataKeyring, tenant_id: str, mode: str, siren: str
) -> dict[str, Any] | None:
    """The accounting raw record of the tenant's uploads for siren, or None when none."""
    rows = await BooksRepository(session).newest(tenant_id, mode, siren, 4 * accounting.MAX_YEARS)
    files: list[dict[str, Any]] = []
    seen = set()
    for row in rows:
        if row.closing_date in seen:
            continue  # an older upload of the same fiscal year
        seen.add(row.closing_date)
        plain = keyring.decrypt(
            row.key_id, row.nonce, row.ciphertext, books_aad(tenant_id, mode, siren, row.id)
        )
        files.append(
            {"name": row.file_name, "origin": "upload", "text": _text(zlib.decompress(plain))}
        )
        if len(files) == accounting.MAX_YEARS:
            break
    return {"fec": files} if files else None


def uploaded_reader(
    sessions: SessionOpener, keyring: DataKeyring, tenant_id: str, mode: str
) -> Callable[[str], Awaitable[dict[str, Any] | None]]:
    """What the accounting source asks first: the caller's uploaded books of a SIREN."""

    async def read(siren: str) -> dict[str, Any] | None:
        async with opened_session(sessions) as session:
            return await read_uploaded(session, keyring, tenant_id, mode, siren)

    return read
