"""Group commit of audit rows: concurrent decisions of a tenant share one transaction.

Every request still awaits the commit of its own row before it answers; what is shared
is the per-tenant chain lock, the chain-head read and the commit (one fsync) for all rows
that arrived while the previous batch was being written. Under load this turns N lock
hand-overs and N commits into one of each, which is what caps a single tenant otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import orjson
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from b2bscore.decisions.chain import GENESIS_HASH, RowContent
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.models import Decision, LateCommit
from b2bscore.decisions.repository import DecisionRepository
from b2bscore.decisions.service import (
    ADVISORY_LOCK_CLASS,
    AuditUnavailable,
    DecisionRecord,
    IdempotencyConflict,
    chain_lock,
    chain_name,
    link_into_chain,
    prepare_row,
    record_decision,
    sqlite_chain_lock,
)
from b2bscore.kit.db import create_sync_sqlite_engine
from b2bscore.kit.logging import throttle
from b2bscore.kit.metrics import AUDIT_BATCH_ROWS

log = logging.getLogger(__name__)

MAX_BATCH = 64
_COLUMNS = tuple(column.key for column in Decision.__table__.columns)
_LATE_COLUMNS = ("decision_id", "tenant_id", "mode", "noted_at")


# Errors of one row, not of the batch: server-side constraint and data errors, and
# asyncpg's client-side encoding errors (a DataError that is also an InterfaceError).
_ROW_REFUSED = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg.exceptions._base.DataError,
)
# The connection is gone (or the server is going away): nothing in the batch survives it.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    # A protocol left in a broken state by the server's goodbye (seen when a backend is
    # terminated between two batches): the connection is unusable, like a closed one.
    asyncpg.exceptions._base.InternalClientError,
    OSError,
)


@dataclass(slots=True)
class _Phase:
    """How far a batch got (past `committing` a failure may or may not have committed)."""

    committing: bool = False
    connection_lost: bool = False


class _StaleConnection(Exception):
    """The batch met a connection the database had closed, before anything was committed."""


def _values(row: Decision) -> dict[str, object]:
    return {key: getattr(row, key) for key in _COLUMNS}


_TABLE = Decision.__tablename__
_JSON_COLUMNS = frozenset({"request", "features", "reasons", "sources"})
_LOCK_SQL = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
_KNOWN_KEYS_SQL = (
    f"SELECT mode, idempotency_key, id FROM {_TABLE} "  # noqa: S608 - constant names only
    "WHERE tenant_id = $1 AND idempotency_key = ANY($2::varchar[])"
)
_LATE_SQL = (
    "INSERT INTO late_commits (decision_id, tenant_id, mode, noted_at) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
)
_HEAD_SQL = (
    f"SELECT seq, row_hash FROM {_TABLE} "  # noqa: S608 - constant names only
    "WHERE tenant_id = $1 AND mode = $2 ORDER BY seq DESC LIMIT 1"
)
_INSERT_SQL = (
    f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant names only
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})"
)


def _postgres_args(row: Decision) -> tuple[object, ...]:
    # JSONB goes as JSON text, as the engine's own codec expects (orjson, like the ORM
    # path); money is already Decimal cents and times aware UTC (prepare_row made sure).
    return tuple(
        orjson.dumps(getattr(row, key)).decode() if key in _JSON_COLUMNS else getattr(row, key)
        for key in _COLUMNS
    )


def _outcome_read(done: asyncio.Future[Decision]) -> None:
    if not done.cancelled():
        done.exception()


# An idempotency key is unique per tenant and mode: (mode, key).
KnownKeys = dict[tuple[str, str], str]


def _split(
    batch: list[_Pending], known: KnownKeys
) -> tuple[list[_Pending], list[tuple[_Pending, str]]]:
    """Rows to write, and rows whose idempotency key already has a decision in their mode."""
    accepted: list[_Pending] = []
    replays: list[tuple[_Pending, str]] = []
    for pending in batch:
        key = pending.record.idempotency_key
        if key is not None and (pending.record.mode, key) in known:
            replays.append((pending, known[pending.record.mode, key]))
            continue
        if key is not None:
            # A later retry in this same batch replays it.
            known[pending.record.mode, key] = pending.row.id
        accepted.append(pending)
    return accepted, replays


def _late_rows(
    pendings: list[_Pending], noted_at: datetime
) -> list[tuple[str, str, str, datetime]]:
    return [(p.row.id, p.record.tenant_id, p.record.mode, noted_at) for p in pendings]


@dataclass(slots=True)
class _Pending:
    row: Decision
    record: DecisionRecord
    content: RowContent
    done: asyncio.Future[Decision] = field(default_factory=asyncio.Future)
    # The request stopped waiting (answered 503): if the row commits all the same, it is
    # noted in late_commits, in the batch's own transaction when known by then.
    abandoned: bool = False
    noted_late: bool = False


class AuditWriter:
    """Writes audit rows in per-tenant batches; one writer per process."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        keyring: DataKeyring,
        chain_keys: ChainKeyring,
    ):
        self._sessionmaker = sessionmaker
        engine = sessionmaker.kw["bind"]
        if not isinstance(engine, AsyncEngine):
            raise TypeError("the audit writer needs a sessionmaker bound to an AsyncEngine")
        self._engine = engine
        self._keyring = keyring
        self._chain_keys = chain_keys
        # SQLite: each batch is one hop to this thread, which owns a blocking connection.
        self._sqlite: Engine | None = None
        self._sqlite_thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._sqlite = create_sync_sqlite_engine(engine)
            self._sqlite_thread = ThreadPoolExecutor(1, thread_name_prefix="audit-sqlite")
        # One queue and one flusher per (tenant, mode) chain.
        self._queues: defaultdict[tuple[str, str], list[_Pending]] = defaultdict(list)
        self._flushers: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def record(
        self, record: DecisionRecord, *, give_up_after: float | None = None
    ) -> Decision:
        """Commit the decision's row (in a shared batch) and return it once durable.

        With give_up_after (seconds), AuditUnavailable once they have passed; should the
        row commit later, it is noted in late_commits (the caller answered 503).
        """
        # Serializing and encrypting the payloads happens here, in the request's own
        # task, so that the batch writer only links and commits.
        row = prepare_row(record, self._keyring)
        pending = _Pending(row, record, RowContent.of(row))
        chain = (record.tenant_id, record.mode)
        self._queues[chain].append(pending)
        flusher = self._flushers.get(chain)
        if flusher is None or flusher.done():
            self._flushers[chain] = asyncio.create_task(self._flush(chain))
        # A caller that gave up (its deadline) no longer reads the outcome: mark it read,
        # so that a failed batch does not log "exception was never retrieved".
        pending.done.add_done_callback(_outcome_read)
        # Shielded: a caller that gives up must not cancel the batch the others wait on.
        if give_up_after is None:
            return await asyncio.shield(pending.done)
        try:
            async with asyncio.timeout(give_up_after):
                return await asyncio.shield(pending.done)
        except TimeoutError:
            # One event loop: either the batch settled before this line (answer with the
            # row) or it settles after, and then sees the flag.
            if pending.done.done() and not pending.done.cancelled():
                return pending.done.result()
            pending.abandoned = True
            raise AuditUnavailable("audit commit timed out") from None

    async def close(self) -> None:
        """Wait for the batches in flight."""
        await asyncio.gather(*self._flushers.values(), return_exceptions=True)
        if self._sqlite_thread is not None and self._sqlite is not None:
            self._sqlite_thread.submit(self._sqlite.dispose).result()

    async def _flush(self, chain: tuple[str, str]) -> None:
        queue = self._queues[chain]
        while queue:
            batch, queue[:] = queue[:MAX_BATCH], queue[MAX_BATCH:]
            try:
                await self._write(chain, batch)
            except Exception as error:  # every waiter must hear about it, whatever it is
                throttle.log(
                    log,
                    logging.ERROR,
                    "audit_batch_failed",
                    "audit batch of %d rows failed: %s",
                    len(batch),
                    type(error).__name__,
                    exc_info=error,
                )
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(
                            error
                            if isinstance(error, AuditUnavailable)
                            else AuditUnavailable(f"audit batch failed: {type(error).__name__}")
                        )
            await self._note_late(batch)

    async def _write(self, chain: tuple[str, str], batch: list[_Pending]) -> None:
        if self._engine.dialect.driver == "asyncpg":
            await self._write_postgres(chain, batch)
            return
        if self._sqlite is not None and self._sqlite_thread is not None:
            await self._write_sqlite(chain, batch, self._sqlite, self._sqlite_thread)
            return
        try:
            try:
                async with self._sessionmaker() as session:
                    await self._commit_batch(session, chain, batch)
            except _StaleConnection:
                # The pool handed out a connection the database had dropped (a restart):
                # the pool is now invalidated, nothing was committed, one retry is safe.
                async with self._sessionmaker() as session:
                    await self._commit_batch(session, chain, batch)
        except IntegrityError:
            # One row of the batch was refused (an idempotency key raced in from another
            # process): write them one by one so that only that row's request hears it.
            for pending in batch:
                if not pending.done.done():
                    await self._write_alone(pending)
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            raise AuditUnavailable("audit store unavailable") from error

    async def _commit_batch(
        self, session: AsyncSession, chain: tuple[str, str], batch: list[_Pending]
    ) -> None:
        committing = False
        tenant_id, mode = chain
        try:
            async with chain_lock(session, tenant_id, mode):
                accepted, replays = await self._split_replays(session, tenant_id, batch)
                head = await DecisionRepository(session).chain_head(tenant_id, mode)
                seq, prev_hash = (0, GENESIS_HASH) if head is None else head
                for pending in accepted:
                    seq += 1
                    link_into_chain(
                        pending.row,
                        seq=seq,
                        prev_hash=prev_hash,
                        chain_keys=self._chain_keys,
                        content=pending.content,
                    )
                    prev_hash = pending.row.row_hash
                if accepted:
                    # A bulk INSERT of plain values (one executemany) instead of the unit
                    # of work, which tracked every row object only to emit the same INSERT.
                    await session.execute(insert(Decision), [_values(p.row) for p in accepted])
                    gone = [p for p in accepted if p.abandoned]
                    if gone:
                        await session.execute(
                            insert(LateCommit),
                            [
                                dict(zip(_LATE_COLUMNS, row, strict=True))
                                for row in _late_rows(gone, datetime.now(UTC))
                            ],
                        )
                        for pending in gone:
                            pending.noted_late = True
                committing = True
                await session.commit()
        except DBAPIError as error:
            # Before COMMIT a dead connection means nothing was written: safe to retry.
            # During COMMIT the outcome is unknown, and a retry could write twice.
            if error.connection_invalidated and not committing:
                raise _StaleConnection from error
            raise
        self._settle(accepted, replays)

    async def _write_sqlite(
        self,
        chain: tuple[str, str],
        batch: list[_Pending],
        engine: Engine,
        thread: ThreadPoolExecutor,
    ) -> None:
        """The whole batch in one hop to the SQLite thread (see create_sync_sqlite_engine)."""
        loop = asyncio.get_running_loop()
        try:
            async with sqlite_chain_lock():  # the lock record_decision takes too
                accepted, replays = await loop.run_in_executor(
                    thread, self._commit_batch_sqlite, engine, chain, batch
                )
        except IntegrityError:
            # One row was refused (an idempotency key raced in from another process):
            # one by one, so that only that row's request hears it.
            for pending in batch:
                if not pending.done.done():
                    await self._write_alone(pending)
            return
        except (SQLAlchemyError, OSError) as error:
            raise AuditUnavailable("audit store unavailable") from error
        self._settle(accepted, replays)

    def _commit_batch_sqlite(
        self, engine: Engine, chain: tuple[str, str], batch: list[_Pending]
    ) -> tuple[list[_Pending], list[tuple[_Pending, str]]]:
        """In the SQLite thread: known keys, chain head, inserts and commit."""
        tenant_id, mode = chain
        with engine.begin() as connection:  # BEGIN IMMEDIATE: see create_sync_sqlite_engine
            keys = {p.record.idempotency_key for p in batch if p.record.idempotency_key}
            known: KnownKeys = {}
            if keys:
                rows = connection.execute(
                    select(Decision.mode, Decision.idempotency_key, Decision.id).where(
                        Decision.tenant_id == tenant_id, Decision.idempotency_key.in_(keys)
                    )
                )
                known = {(m, key): decision_id for m, key, decision_id in rows if key}
            accepted, replays = _split(batch, known)
            head = connection.execute(
                select(Decision.seq, Decision.row_hash)
                .where(Decision.tenant_id == tenant_id, Decision.mode == mode)
                .order_by(Decision.seq.desc())
                .limit(1)
            ).one_or_none()
            seq, prev_hash = (0, GENESIS_HASH) if head is None else (head[0], head[1])
            for pending in accepted:
                seq += 1
                link_into_chain(
                    pending.row,
                    seq=seq,
                    prev_hash=prev_hash,
                    chain_keys=self._chain_keys,
                    content=pending.content,
                )
                prev_hash = pending.row.row_hash
            if accepted:
                connection.execute(insert(Decision), [_values(p.row) for p in accepted])
                gone = [p for p in accepted if p.abandoned]
                if gone:
                    connection.execute(
                        insert(LateCommit),
                        [
                            dict(zip(_LATE_COLUMNS, row, strict=True))
                            for row in _late_rows(gone, datetime.now(UTC))
                        ],
                    )
                    for pending in gone:
                        pending.noted_late = True
        return accepted, replays

    async def _write_postgres(self, chain: tuple[str, str], batch: list[_Pending]) -> None:
        """The batch straight through asyncpg: five round trips, no ORM or Core on the way.

        Through the session the same batch cost ~2 ms of CPU, most of it SQLAlchemy
        building, caching and processing four statements; this is the hot path of every
        decision. The connection still comes from the engine's pool (same limits, same
        idle ping), and SQLite keeps the session path above.
        """
        for attempt in (1, 2):
            try:
                connection = await self._engine.connect()
            except (SQLAlchemyError, OSError, TimeoutError) as error:
                raise AuditUnavailable("audit store unavailable") from error
            try:
                pooled = await connection.get_raw_connection()
                pg: asyncpg.Connection = pooled.driver_connection
                phase = _Phase()
                try:
                    await self._commit_batch_postgres(pg, chain, batch, phase)
                    return
                except _ROW_REFUSED:
                    # One row was refused (an idempotency key raced in from another
                    # process, a value the column type rejects): one by one, so that only
                    # that row's request hears it.
                    break
                except _CONNECTION_LOST as error:
                    phase.connection_lost = True
                    # Before COMMIT a dead connection means nothing was written: one retry.
                    # During COMMIT the outcome is unknown, and a retry could write twice.
                    if phase.committing or attempt == 2:
                        raise AuditUnavailable("audit store unavailable") from error
                except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                    raise AuditUnavailable("audit store unavailable") from error
                finally:
                    # Never hand the pool a dead connection or one inside a transaction.
                    if phase.connection_lost or pg.is_closed() or pg.is_in_transaction():
                        with contextlib.suppress(Exception):
                            await connection.invalidate()
            finally:
                with contextlib.suppress(Exception):
                    await connection.close()
        for pending in batch:
            if not pending.done.done():
                await self._write_alone(pending)

    async def _commit_batch_postgres(
        self,
        pg: asyncpg.Connection,
        chain: tuple[str, str],
        batch: list[_Pending],
        phase: _Phase,
    ) -> None:
        tenant_id, mode = chain
        async with pg.transaction():
            await pg.execute(_LOCK_SQL, ADVISORY_LOCK_CLASS, chain_name(tenant_id, mode))
            keys = [p.record.idempotency_key for p in batch if p.record.idempotency_key]
            known: KnownKeys = {}
            if keys:
                rows = await pg.fetch(_KNOWN_KEYS_SQL, tenant_id, keys)
                known = {(row["mode"], row["idempotency_key"]): row["id"] for row in rows}
            accepted, replays = _split(batch, known)
            head = await pg.fetchrow(_HEAD_SQL, tenant_id, mode)
            seq, prev_hash = (0, GENESIS_HASH) if head is None else (head["seq"], head["row_hash"])
            for pending in accepted:
                seq += 1
                link_into_chain(
                    pending.row,
                    seq=seq,
                    prev_hash=prev_hash,
                    chain_keys=self._chain_keys,
                    content=pending.content,
                )
                prev_hash = pending.row.row_hash
            if accepted:
                await pg.executemany(_INSERT_SQL, [_postgres_args(p.row) for p in accepted])
                gone = [p for p in accepted if p.abandoned]
                if gone:
                    await pg.executemany(_LATE_SQL, _late_rows(gone, datetime.now(UTC)))
                    for pending in gone:
                        pending.noted_late = True
            # Leaving the block commits; from here a failure leaves the outcome unknown.
            phase.committing = True
        self._settle(accepted, replays)

    def _settle(self, accepted: list[_Pending], replays: list[tuple[_Pending, str]]) -> None:
        AUDIT_BATCH_ROWS.observe(len(accepted))
        for pending in accepted:
            pending.done.set_result(pending.row)
        # Only now: a replay answers with a decision that must already be readable.
        for pending, decision_id in replays:
            pending.done.set_exception(IdempotencyConflict(decision_id))

    async def _split_replays(
        self, session: AsyncSession, tenant_id: str, batch: list[_Pending]
    ) -> tuple[list[_Pending], list[tuple[_Pending, str]]]:
        """Rows to write, and rows whose idempotency key already has a decision."""
        keys = {p.record.idempotency_key for p in batch if p.record.idempotency_key}
        known: KnownKeys = {}
        if keys:
            rows = await session.execute(
                select(Decision.mode, Decision.idempotency_key, Decision.id).where(
                    Decision.tenant_id == tenant_id, Decision.idempotency_key.in_(keys)
                )
            )
            known = {(mode, key): decision_id for mode, key, decision_id in rows.all() if key}
        return _split(batch, known)

    async def _note_late(self, batch: list[_Pending]) -> None:
        """Note rows that committed after their request gave up, unless noted already.

        Rows whose request was gone before their batch was written were noted in the
        batch's transaction; these gave up while it committed. Should the store fail
        again now, the log says which decisions went unnoted.
        """
        late = [
            p
            for p in batch
            if p.abandoned
            and not p.noted_late
            and p.done.done()
            and not p.done.cancelled()
            and p.done.exception() is None
        ]
        if not late:
            return
        try:
            async with self._sessionmaker() as session:
                await session.execute(
                    insert(LateCommit).prefix_with("OR IGNORE", dialect="sqlite"),
                    [
                        dict(zip(_LATE_COLUMNS, row, strict=True))
                        for row in _late_rows(late, datetime.now(UTC))
                    ],
                )
                await session.commit()
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            log.error(
                "%d decisions committed after their 503 could not be noted in late_commits "
                "(%s): %s",
                len(late),
                type(error).__name__,
                ", ".join(p.row.id for p in late),
            )
            return
        for pending in late:
            pending.noted_late = True
        log.warning("%d decisions committed after their request was answered 503", len(late))

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            async with self._sessionmaker() as session:
                row = await record_decision(
                    session,
                    record=pending.record,
                    keyring=self._keyring,
                    chain_keys=self._chain_keys,
                )
        except (IdempotencyConflict, AuditUnavailable) as error:
            pending.done.set_exception(error)
        else:
            pending.done.set_result(row)
