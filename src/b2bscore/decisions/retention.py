"""Retention: drop the encrypted raw payloads of old decisions, keep everything else.

The chain does not cover the ciphertext and its nonce (only the plaintext's digest), and
the PostgreSQL trigger allows exactly this update, so a purged row still verifies.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.models import Decision


async def purge_payloads(
    session: AsyncSession, older_than: datetime, *, tenant_id: str | None = None
) -> int:
    """NULL the payload and nonce of decisions created before older_than; rows purged.

    The caller commits.
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    statement = (
        update(Decision)
        .where(Decision.created_at < older_than, Decision.payload_ciphertext.is_not(None))
        .values(payload_ciphertext=None, payload_nonce=None)
        .execution_options(synchronize_session=False)
    )
    if tenant_id is not None:
        statement = statement.where(Decision.tenant_id == tenant_id)
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)
