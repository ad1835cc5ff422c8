"""Writing the audit row of a decision: serialized per chain, linked, encrypted, committed."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from b2bscore.decisions.chain import (
    GENESIS_HASH,
    RowContent,
    canonical_json,
    compute_row_hash,
    jsonable,
    sha256_hex,
)
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring, DecryptionError, payload_aad
from b2bscore.decisions.models import CENT, Decision
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.kit.packed import join_object, unpack_json
from b2bscore.tenants.models import new_id

# Namespace of our advisory locks, so that they cannot collide with another user's.
ADVISORY_LOCK_CLASS: Final = 0x6232_6273  # "b2bs"


class AuditUnavailable(Exception):
    """The audit store could not commit: no decision may be issued (503)."""


class IdempotencyConflict(Exception):
    """A decision already exists under this idempotency key."""

    def __init__(self, decision_id: str) -> None:
        super().__init__(f"idempotency key already used by decision {decision_id}")
        self.decision_id = decision_id


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord:
    """Everything the audit row holds, as plain Python values, plus the packed raw payloads."""

    tenant_id: str
    mode: str
    siren: str
    product: str
    requested_amount: Decimal
    request_hash: str
    request: Mapping[str, Any]
    features: Mapping[str, Any]
    model_id: str
    model_version: str
    # A float is kept as its repr(), a Decimal as written: both read back exactly.
    probability_of_default: float | Decimal
    score: int
    grade: str
    decision: str
    proposed_limit: Decimal
    reasons: Sequence[Mapping[str, Any]]
    sources: Mapping[str, Mapping[str, Any]]
    degraded: bool
    latency_ms: float
    # Raw provider payloads by source name, each packed (kit.packed.pack_json).
    payloads: Mapping[str, bytes]
    idempotency_key: str | None = None
    api_key_id: str | None = None
    decision_id: str | None = None  # pre-assigned by the caller, or a new UUID


def hash_request(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request body."""
    return sha256_hex(canonical_json(body))


def _cents(value: Decimal) -> Decimal:
    quantized = value.quantize(CENT)
    if quantized != value:
        raise ValueError(f"money has more than 2 decimals: {value}")
    return quantized


_sqlite_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def chain_name(tenant_id: str, mode: str) -> str:
    """The name of a (tenant, mode) chain, as its advisory lock is keyed."""
    return f"{tenant_id}/{mode}"


@asynccontextmanager
async def chain_lock(session: AsyncSession, tenant_id: str, mode: str) -> AsyncIterator[None]:
    """Serialize writers of one (tenant, mode) chain until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        # Held until commit or rollback, across every process sharing the database.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:chain))"),
            {"space": ADVISORY_LOCK_CLASS, "chain": chain_name(tenant_id, mode)},
        )
        yield
        return
    async with sqlite_chain_lock():
        yield


def sqlite_chain_lock() -> asyncio.Lock:
    """This event loop's lock over SQLite chain writes.

    SQLite has one writer per database, but this process's tasks would still read the
    same chain head between their SELECT and INSERT; (tenant_id, seq) is unique anyway.
    """
    loop = asyncio.get_running_loop()
    lock = _sqlite_locks.get(loop)
    if lock is None:
        lock = _sqlite_locks[loop] = asyncio.Lock()
    return lock


def prepare_row(record: DecisionRecord, keyring: DataKeyring) -> Decision:
    """The audit row of a record, encrypted and hashed, not yet linked into its chain."""
    return _prepare(tenant_id=record.tenant_id, record=record, keyring=keyring)


def _probability_text(value: float | Decimal) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite() or not 0 <= value <= 1:
            raise ValueError(f"probability of default out of range: {value}")
        return str(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability of default out of range: {value}")
    return repr(float(value))


def _prepare(*, tenant_id: str, record: DecisionRecord, keyring: DataKeyring) -> Decision:
    """The row without its place in the chain: everything that can happen outside the lock.

    Hashing and encrypting the payloads is done here, not under the per-chain lock,
    where it would cap one tenant's throughput.
    """
    decision_id = record.decision_id or new_id()
    # Joined from the sources' packed records: nothing is re-encoded per decision.
    plaintext = join_object(record.payloads)
    key_id, nonce, ciphertext = keyring.encrypt(plaintext, payload_aad(tenant_id, decision_id))
    return Decision(
        id=decision_id,
        tenant_id=tenant_id,
        api_key_id=record.api_key_id,
        mode=record.mode,
        siren=record.siren,
        product=record.product,
        requested_amount=_cents(record.requested_amount),
        idempotency_key=record.idempotency_key,
        request_hash=record.request_hash,
        request=jsonable(record.request),
        features=jsonable(record.features),
        model_id=record.model_id,
        model_version=record.model_version,
        probability_of_default=_probability_text(record.probability_of_default),
        score=int(record.score),
        grade=record.grade,
        decision=record.decision,
        proposed_limit=_cents(record.proposed_limit),
        reasons=jsonable(record.reasons),
        sources=jsonable(record.sources),
        degraded=bool(record.degraded),
        latency_ms=float(record.latency_ms),
        payload_ciphertext=ciphertext,
        payload_nonce=nonce,
        payload_key_id=key_id,
        payload_digest=sha256_hex(plaintext),
    )


def link_into_chain(
    decision: Decision,
    *,
    seq: int,
    prev_hash: str,
    chain_keys: ChainKeyring,
    content: RowContent | None = None,
) -> None:
    """Give the prepared row its place in the chain, keyed link included (under the lock)."""
    decision.seq = seq
    # Taken under the chain lock, so created_at follows seq within a chain.
    decision.created_at = datetime.now(UTC)
    decision.prev_hash = prev_hash
    decision.chain_key_id = chain_keys.current_key_id
    decision.row_hash = (
        content.row_hash(prev_hash, decision, chain_keys)
        if content is not None
        else compute_row_hash(prev_hash, decision, chain_keys)
    )


async def _rollback_quietly(session: AsyncSession) -> None:
    # When the connection is already gone there is nothing to roll back; the pool
    # discards it.
    with contextlib.suppress(SQLAlchemyError, OSError):
        await session.rollback()


async def record_decision(
    session: AsyncSession,
    *,
    record: DecisionRecord,
    keyring: DataKeyring,
    chain_keys: ChainKeyring,
    tenant_id: str | None = None,
) -> Decision:
    """Append the decision to its (tenant, mode) chain and COMMIT the session.

    Raises IdempotencyConflict (with the existing decision id) when the idempotency key
    was already used, and AuditUnavailable on any database failure (after a rollback,
    which expires the objects the session holds).
    """
    if tenant_id is not None and tenant_id != record.tenant_id:
        raise ValueError("tenant_id does not match record.tenant_id")
    tenant_id = record.tenant_id
    repository = DecisionRepository(session)
    decision = _prepare(tenant_id=tenant_id, record=record, keyring=keyring)
    try:
        async with chain_lock(session, tenant_id, record.mode):
            if record.idempotency_key is not None:
                existing = await repository.get_by_idempotency_key(
                    tenant_id, record.mode, record.idempotency_key
                )
                if existing is not None:
                    raise IdempotencyConflict(existing.id)
            head = await repository.chain_head(tenant_id, record.mode)
            seq, prev_hash = (1, GENESIS_HASH) if head is None else (head[0] + 1, head[1])
            link_into_chain(decision, seq=seq, prev_hash=prev_hash, chain_keys=chain_keys)
            session.add(decision)
            await session.commit()
    except IdempotencyConflict:
        # Nothing was written: committing ends the transaction (releasing the advisory
        # lock) without expiring the caller's objects as a rollback would.
        try:
            await session.commit()
        except (SQLAlchemyError, OSError, TimeoutError):
            await _rollback_quietly(session)
        raise
    except IntegrityError as exc:
        await _rollback_quietly(session)
        if record.idempotency_key is not None:
            try:
                existing = await repository.get_by_idempotency_key(
                    tenant_id, record.mode, record.idempotency_key
                )
            except (SQLAlchemyError, OSError, TimeoutError) as lookup_exc:
                raise AuditUnavailable("audit store lookup failed") from lookup_exc
            if existing is not None:
                raise IdempotencyConflict(existing.id) from exc
        raise AuditUnavailable("audit row was refused") from exc
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        await _rollback_quietly(session)
        raise AuditUnavailable("audit store unavailable") from exc
    return decision


def open_payloads(decision: Decision, keyring: DataKeyring) -> dict[str, Any] | None:
    """The decrypted raw payloads of a decision; None once purged by retention.

    Raises DecryptionError when the ciphertext or its digest does not match the row.
    """
    if decision.payload_ciphertext is None or decision.payload_nonce is None:
        return None
    plaintext = keyring.decrypt(
        decision.payload_key_id,
        decision.payload_nonce,
        decision.payload_ciphertext,
        payload_aad(decision.tenant_id, decision.id),
    )
    if sha256_hex(plaintext) != decision.payload_digest:
        raise DecryptionError("payload does not match the digest in the chain")
    # Rows written before payloads were packed hold plain JSON; unpack_json reads both.
    payloads: dict[str, Any] = unpack_json(plaintext)
    return payloads
