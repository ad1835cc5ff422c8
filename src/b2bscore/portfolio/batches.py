"""Batch scoring: a CSV or JSONL file of score requests, decided row by row in the background.

The upload is stored as it came and answered at once (202). A worker splits it into rows
(each validated like a POST /v1/score body; a bad row gets its errors and no decision),
then chunk jobs, shared by any number of workers, decide the valid rows. Each row's
decision carries the idempotency key `batch:<batch id>:<row number>`: the audit store
refuses a second decision under that key, so a worker killed mid-chunk and a chunk run
again never decide a row twice; the row takes the decision already recorded.

A row whose decision fails for another reason than its input (the audit store refused or
timed out, an unexpected error) is retried: `batch_row_max_attempts` tries in all (3), the
n-th retry `batch_row_retry_seconds * 2**(n-1)` after the failure (30 s, then 60 s), by a
chunk job scheduled for then. After the last try the row ends `failed`, its reason in
`errors`, and counts in the batch's `failed` total and its results file.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Final

import orjson
from pydantic import ValidationError
from sqlalchemy import func, insert, or_, select, update

from b2bscore.decisions.repository import DecisionRepository
from b2bscore.kit.db import opened_session
from b2bscore.kit.metrics import BATCH_ROWS
from b2bscore.kit.problems import Problem
from b2bscore.kit.state import AppState
from b2bscore.portfolio.models import Batch, BatchRow
from b2bscore.portfolio.repository import PortfolioRepository
from b2bscore.scoring.schemas import ScoreRequest, ScoreResponse
from b2bscore.scoring.service import (
    ScoringTools,
    answer_from_decision,
    decide_and_record,
    request_fingerprint,
)
from b2bscore.tenants.models import new_id, utcnow
from b2bscore.tenants.service import Principal
from b2bscore.webhooks import service as webhooks

log = logging.getLogger(__name__)

PREPARE_TASK: Final = "portfolio.batch_prepare"
CHUNK_TASK: Final = "portfolio.batch_chunk"
FIELDS: Final = ("siren", "requested_amount", "product", "external_reference")
CSV_TYPES: Final = frozenset({"text/csv", "application/csv"})
JSONL_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/jsonl", "application/jsonlines"}
)
INSERT_ROWS: Final = 2000


def format_of(content_type: str) -> str:
    """csv or jsonl from a Content-Type; 415 otherwise."""
    media = content_type.split(";")[0].strip().lower()
    if media in CSV_TYPES:
        return "csv"
    if media in JSONL_TYPES:
        return "jsonl"
    raise Problem(
        415,
        "unsupported_media_type",
        "Unsupported media type",
        "Send the batch as text/csv or application/x-ndjson.",
        errors=[{"field": "Content-Type", "message": "must be text/csv or application/x-ndjson"}],
    )


def count_rows(content: bytes, fmt: str) -> int:
    """Data rows of the file (non-blank lines, less the CSV header)."""
    lines = sum(1 for line in content.splitlines() if line.strip())
    return max(0, lines - 1) if fmt == "csv" else lines


async def create_batch(
    state: AppState, principal: Principal, content: bytes, content_type: str
) -> Batch:
    """Store the upload and queue its preparation; 413 past the row limit."""
    fmt = format_of(content_type)
    rows = count_rows(content, fmt)
    limit = state.settings.batch_max_rows
    if rows > limit:
        raise Problem(
            413,
            "batch_too_large",
            "Batch too large",
            f"A batch holds at most {limit} rows; this file has {rows}.",
        )
    if rows == 0:
        raise Problem(
            422,
            "validation_error",
            "Empty batch",
            "The file holds no data row.",
            errors=[{"field": "body", "message": "no data row"}],
        )
    batch = Batch(
        id=new_id(),
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        api_key_id=principal.key_id,
        status="queued",
        format=fmt,
        source=content,
        total_rows=rows,
        invalid_rows=0,
        decided_rows=0,
        failed_rows=0,
        created_at=utcnow(),
    )
    async with opened_session(state.sessionmaker) as session:
        session.add(batch)
        await session.commit()
    if state.jobs is not None:
        await state.jobs.defer(PREPARE_TASK, lock=f"batch:{batch.id}", batch_id=batch.id)
    return batch


def _records(content: bytes, fmt: str) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
    """(fields, None) per data row, or (None, why it could not be read)."""
    if fmt == "jsonl":
        for line in content.splitlines():
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None, "not a JSON object"
                continue
            yield (item, None) if isinstance(item, dict) else (None, "not a JSON object")
        return
    text = content.decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = {"siren", "requested_amount", "product"} - set(reader.fieldnames or [])
    for record in reader:
        if missing:
            yield None, f"header lacks {', '.join(sorted(missing))}"
            continue
        if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
            continue
        if None in record:
            yield None, "more fields than the header"
            continue
        yield {k: (v if v != "" else None) for k, v in record.items() if k in FIELDS}, None


def validate_row(
    fields: dict[str, Any] | None, unreadable: str | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """(request, None) for a valid row, (None, errors naming the fields) otherwise."""
    if fields is None:
        return None, [{"field": "row", "message": unreadable or "unreadable"}]
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        return None, [{"field": f, "message": "unknown field"} for f in unknown]
    try:
        request = ScoreRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        return None, [
            {"field": ".".join(str(p) for p in e["loc"]) or "row", "message": e["msg"]}
            for e in error.errors()
        ]
    return request.model_dump(mode="json"), None


async def prepare(state: AppState, batch_id: str) -> int:
    """Split the stored file into rows (once) and queue the chunks; returns chunks queued."""
    settings = state.settings
    async with opened_session(state.sessionmaker) as session:
        batch = await session.get(Batch, batch_id)
        if batch is None or batch.status == "completed":
            return 0
        if batch.source is not None:
            rows: list[dict[str, Any]] = []
            invalid = 0
            for number, (fields, unreadable) in enumerate(_records(batch.source, batch.format), 1):
                request, errors = validate_row(fields, unreadable)
                invalid += errors is not None
                rows.append(
                    {
                        "batch_id": batch.id,
                        "row_number": number,
                        "status": "invalid" if errors else "pending",
                        "request": request,
                        "errors": errors,
                        "decision_id": None,
                        "result": None,
                        "attempts": 0,
                        "retry_at": None,
                    }
                )
            for start in range(0, len(rows), INSERT_ROWS):
                await session.execute(insert(BatchRow), rows[start : start + INSERT_ROWS])
            batch.total_rows = len(rows)
            batch.invalid_rows = invalid
            batch.source = None
            batch.status = "running"
            batch.started_at = utcnow()
            BATCH_ROWS.labels("invalid").inc(invalid)
            await session.commit()
        total = batch.total_rows
    chunks = 0
    if state.jobs is not None:
        size = settings.batch_chunk_rows
        for first in range(1, total + 1, size):
            await state.jobs.defer(
                CHUNK_TASK,
                lock=f"batch:{batch_id}:{first}",
                queueing_lock=f"batch:{batch_id}:{first}",
                batch_id=batch_id,
                first_row=first,
                last_row=min(first + size - 1, total),
            )
            chunks += 1
    await finish_if_done(state, batch_id)
    return chunks


def _principal(batch: Batch) -> Principal:
    return Principal(
        tenant_id=batch.tenant_id,
        tenant_name="",
        key_id=batch.api_key_id,
        mode="test" if batch.mode == "test" else "live",
        scopes=frozenset({"score:write"}),
        rate_limit_per_minute=None,
    )


_gates: dict[int, asyncio.Semaphore] = {}


def _row_gate(limit: int) -> asyncio.Semaphore:
    """One bound on the rows in flight in this process, whatever the chunks running."""
    loop = id(asyncio.get_running_loop())
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(limit)
    return gate


def row_key(batch_id: str, row_number: int) -> str:
    """The idempotency key of one row's decision."""
    return f"batch:{batch_id}:{row_number}"


def _result(answer: ScoreResponse) -> dict[str, Any]:
    return {
        "decision_id": answer.decision_id,
        "score": answer.score,
        "grade": answer.grade,
        "decision": answer.decision,
        "probability_of_default": answer.probability_of_default,
        "proposed_limit": f"{answer.proposed_limit:.2f}",
        "degraded": answer.degraded,
        "reasons": [r.code for r in answer.reasons],
    }


def retry_delay(attempts: int, base_seconds: float) -> timedelta:
    """The wait before the next try of a row that failed attempts times."""
    return timedelta(seconds=base_seconds * 2 ** (attempts - 1))


async def run_chunk(state: AppState, batch_id: str, first_row: int, last_row: int) -> int:
    """Decide the due pending rows first_row..last_row; returns how many were decided now."""
    settings = state.settings
    now = utcnow()
    async with opened_session(state.sessionmaker) as session:
        batch = await session.get(Batch, batch_id)
        if batch is None:
            return 0
        session.expunge(batch)
        in_chunk = (
            BatchRow.batch_id == batch_id,
            BatchRow.status == "pending",
            BatchRow.row_number >= first_row,
            BatchRow.row_number <= last_row,
        )
        rows = (
            await session.scalars(
                select(BatchRow)
                .where(*in_chunk, or_(BatchRow.retry_at.is_(None), BatchRow.retry_at <= now))
                .order_by(BatchRow.row_number)
            )
        ).all()
        pending = [(r.row_number, r.request, r.attempts) for r in rows]
    decided = 0
    if pending:
        principal = _principal(batch)
        # A batch row is the same decision as POST /v1/score, on the same data.
        tools = ScoringTools.of(state, batch.mode)
        gate = _row_gate(settings.batch_row_concurrency)

        async def one(number: int, request: dict[str, Any] | None, attempts: int) -> None:
            nonlocal decided
            async with gate:
                outcome = await _decide_row(
                    state, tools, principal, batch_id, number, request, attempts
                )
            decided += outcome == "decided"

        await asyncio.gather(*(one(n, r, a) for n, r, a in pending))
    # Rows waiting for their retry: this chunk comes back when the first is due.
    async with opened_session(state.sessionmaker) as session:
        next_retry = await session.scalar(select(func.min(BatchRow.retry_at)).where(*in_chunk))
    if next_retry is not None and state.jobs is not None:
        await state.jobs.defer(
            CHUNK_TASK,
            lock=f"batch:{batch_id}:{first_row}",
            queueing_lock=f"batch:{batch_id}:{first_row}",
            schedule_at=next_retry,
            batch_id=batch_id,
            first_row=first_row,
            last_row=last_row,
        )
    await finish_if_done(state, batch_id)
    return decided


def _failure(error: BaseException) -> str:
    if isinstance(error, Problem):
        return f"{error.code}: {error.detail or error.title}"
    # Not the message: an unexpected error's text may carry data; its type is enough here.
    return f"internal_error: {type(error).__name__}"


async def _decide_row(
    state: AppState,
    tools: ScoringTools,
    principal: Principal,
    batch_id: str,
    number: int,
    request: dict[str, Any] | None,
    attempts: int,
) -> str:
    """Decide one row and store its outcome: decided, pending (retry later) or failed."""
    settings = state.settings
    key = row_key(batch_id, number)
    answer: ScoreResponse | None = None
    error: str | None = None
    try:
        body = ScoreRequest.model_validate(request or {})
        async with opened_session(state.sessionmaker) as session:
            earlier = await DecisionRepository(session).get_by_idempotency_key(
                principal.tenant_id, principal.mode, key
            )
        if earlier is not None:
            # Decided before a worker died: take that decision, never a second one.
            answer = answer_from_decision(earlier)
        else:
            started = time.monotonic()
            answer = await decide_and_record(
                body,
                principal=principal,
                tools=tools,
                idempotency_key=key,
                fingerprint=request_fingerprint(body),
                started=started,
                deadline=started + settings.batch_row_deadline_ms / 1000,
            )
    except Exception as failure:  # one row's fault must not stop its chunk
        error = _failure(failure)
        if not isinstance(failure, Problem):
            log.exception("batch %s row %d: unexpected failure", batch_id, number)
    values: dict[str, Any]
    if answer is not None:
        outcome = "decided"
        values = {
            "status": "decided",
            "decision_id": answer.decision_id,
            "result": _result(answer),
            "errors": None,
            "retry_at": None,
        }
    else:
        tried = attempts + 1
        failed = tried >= settings.batch_row_max_attempts
        outcome = "failed" if failed else "pending"
        message = f"{error} (attempt {tried} of {settings.batch_row_max_attempts})"
        values = {
            "status": outcome,
            "attempts": tried,
            "errors": [{"field": "decision", "message": message}],
            "retry_at": None
            if failed
            else utcnow() + retry_delay(tried, settings.batch_row_retry_seconds),
        }
        log.warning("batch %s row %d not decided: %s", batch_id, number, message)
    async with opened_session(state.sessionmaker) as session:
        await session.execute(
            update(BatchRow)
            .where(
                BatchRow.batch_id == batch_id,
                BatchRow.row_number == number,
                BatchRow.status == "pending",
            )
            .values(**values)
        )
        await session.commit()
    if outcome != "pending":
        BATCH_ROWS.labels(outcome).inc()
    return outcome


async def finish_if_done(state: AppState, batch_id: str) -> bool:
    """Mark the batch completed when no row is pending (once) and emit batch.completed."""
    async with opened_session(state.sessionmaker) as session:
        counts = await PortfolioRepository(session).batch_counts(batch_id)
        if counts.get("pending", 0) or not counts:
            return False
        result = await session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.status != "completed")
            .values(
                status="completed",
                completed_at=utcnow(),
                decided_rows=counts.get("decided", 0),
                invalid_rows=counts.get("invalid", 0),
                failed_rows=counts.get("failed", 0),
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        batch = await session.get(Batch, batch_id)
        assert batch is not None
        emitted = await webhooks.emit_event(
            session,
            tenant_id=batch.tenant_id,
            mode=batch.mode,
            event_type="batch.completed",
            ordering_key=f"batch:{batch_id}",
            data={
                "batch_id": batch_id,
                "status": "completed",
                "total_rows": batch.total_rows,
                "decided_rows": counts.get("decided", 0),
                "invalid_rows": counts.get("invalid", 0),
                "failed_rows": counts.get("failed", 0),
            },
        )
        await session.commit()
    await webhooks.dispatch(state.jobs, emitted)
    return True


def result_line(row: BatchRow, fmt: str) -> dict[str, Any]:
    """One row of the results file: the request's reference, then its decision or errors."""
    request = row.request or {}
    result = row.result or {}
    return {
        "row": row.row_number,
        "status": row.status,
        "siren": request.get("siren"),
        "external_reference": request.get("external_reference"),
        "decision_id": row.decision_id,
        "score": result.get("score"),
        "grade": result.get("grade"),
        "decision": result.get("decision"),
        "probability_of_default": result.get("probability_of_default"),
        "proposed_limit": result.get("proposed_limit"),
        "reasons": result.get("reasons")
        if fmt == "jsonl"
        else " ".join(result.get("reasons") or []),
        "errors": row.errors
        if fmt == "jsonl"
        else "; ".join(f"{e['field']}: {e['message']}" for e in row.errors or []),
    }
