"""/v1/monitored-companies, /v1/monitoring-rules and /v1/batches."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from b2bscore.kit.db import opened_session
from b2bscore.kit.deps import DbSession, State
from b2bscore.kit.problems import Problem
from b2bscore.portfolio import batches
from b2bscore.portfolio import service as monitoring
from b2bscore.portfolio.models import Batch, MonitoredCompany, MonitoringRules
from b2bscore.portfolio.repository import PortfolioRepository
from b2bscore.portfolio.schemas import (
    BatchCounts,
    BatchOut,
    MonitoredCompanyCreate,
    MonitoredCompanyList,
    MonitoredCompanyOut,
    Rules,
    RulesOut,
)
from b2bscore.tenants.auth import requires
from b2bscore.tenants.models import utcnow
from b2bscore.tenants.service import Principal

router = APIRouter(tags=["portfolio"])

Writer = Annotated[Principal, requires("score:write", rate_limited=True)]
Reader = Annotated[Principal, requires("decisions:read", rate_limited=True)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    s: _PROBLEM for s in (401, 403, 404, 409, 413, 415, 422, 429, 503)
}
RESULTS_PAGE = 2000


# --- monitoring -------------------------------------------------------------------------


def _monitored_out(
    row: MonitoredCompany, tenant_rules: dict[str, Any] | None
) -> MonitoredCompanyOut:
    rules, source = monitoring.effective_rules(row, tenant_rules)
    last = None
    if row.last_score is not None and row.last_grade is not None:
        last = {
            "decision_id": row.last_decision_id,
            "score": row.last_score,
            "grade": row.last_grade,
            "probability_of_default": float(row.last_probability_of_default or 0),
        }
    return MonitoredCompanyOut.model_validate(
        {
            "id": row.id,
            "mode": row.mode,
            "siren": row.siren,
            "follows_decision_id": row.follows_decision_id,
            "product": row.product,
            "requested_amount": row.requested_amount,
            "rules": rules,
            "rules_source": source,
            "external_reference": row.external_reference,
            "created_at": row.created_at,
            "last_checked_at": row.last_checked_at,
            "last": last,
            "active": row.last_active,
        }
    )


async def _tenant_rules(session: DbSession, principal: Principal) -> dict[str, Any] | None:
    row = await PortfolioRepository(session).rules(principal.tenant_id, principal.mode)
    return row.rules if row is not None else None


async def _monitored(session: DbSession, principal: Principal, item_id: str) -> MonitoredCompany:
    row = await PortfolioRepository(session).monitored(principal.tenant_id, principal.mode, item_id)
    if row is None:
        raise Problem(404, "monitored_company_not_found", "Watched company not found")
    return row


@router.post(
    "/v1/monitored-companies",
    status_code=201,
    response_model=MonitoredCompanyOut,
    responses=_PROBLEMS,
)
async def watch_company(
    body: MonitoredCompanyCreate, principal: Writer, state: State, session: DbSession
) -> MonitoredCompanyOut:
    """Put a company under watch; its first check runs in the background at once."""
    row = await monitoring.watch(state, principal, body)
    return _monitored_out(row, await _tenant_rules(session, principal))


def _cursor(row: MonitoredCompany) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, item_id = raw.split("|", 1)
        return datetime.fromisoformat(created), item_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(
            422,
            "validation_error",
            "Invalid request",
            "Invalid fields: cursor",
            errors=[{"field": "cursor", "message": "Unknown cursor"}],
        ) from None


@router.get("/v1/monitored-companies", response_model=MonitoredCompanyList, responses=_PROBLEMS)
async def list_watched(
    principal: Reader,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> MonitoredCompanyList:
    """Watched companies, newest first, a page at a time."""
    rows = await PortfolioRepository(session).monitored_page(
        principal.tenant_id, principal.mode, limit, _after(cursor)
    )
    tenant_rules = await _tenant_rules(session, principal)
    return MonitoredCompanyList(
        data=[_monitored_out(r, tenant_rules) for r in rows],
        next_cursor=_cursor(rows[-1]) if len(rows) == limit else None,
    )


@router.get(
    "/v1/monitored-companies/{item_id}", response_model=MonitoredCompanyOut, responses=_PROBLEMS
)
async def read_watched(item_id: str, principal: Reader, session: DbSession) -> MonitoredCompanyOut:
    """One watched company and what its last check saw."""
    row = await _monitored(session, principal, item_id)
    return _monitored_out(row, await _tenant_rules(session, principal))


@router.delete("/v1/monitored-companies/{item_id}", status_code=204, responses=_PROBLEMS)
async def unwatch(item_id: str, principal: Writer, session: DbSession) -> Response:
    """Stop watching a company (its decisions stay in the audit store)."""
    row = await _monitored(session, principal, item_id)
    await session.delete(row)
    await session.commit()
    return Response(status_code=204)


@router.get("/v1/monitoring-rules", response_model=RulesOut, responses=_PROBLEMS)
async def read_rules(principal: Reader, session: DbSession) -> RulesOut:
    """The tenant's monitoring rules in the caller's mode (the defaults until set)."""
    row = await PortfolioRepository(session).rules(principal.tenant_id, principal.mode)
    if row is None:
        return RulesOut(rules=Rules(), source="default", updated_at=None)
    return RulesOut(
        rules=Rules.model_validate(row.rules), source="tenant", updated_at=row.updated_at
    )


@router.put("/v1/monitoring-rules", response_model=RulesOut, responses=_PROBLEMS)
async def set_rules(body: Rules, principal: Writer, session: DbSession) -> RulesOut:
    """Set the tenant's rules; every watched company without its own rules follows them."""
    row = await PortfolioRepository(session).rules(principal.tenant_id, principal.mode)
    now = utcnow()
    if row is None:
        row = MonitoringRules(tenant_id=principal.tenant_id, mode=principal.mode)
        session.add(row)
    row.rules = body.model_dump()
    row.updated_at = now
    await session.commit()
    return RulesOut(rules=body, source="tenant", updated_at=now)


# --- batches ----------------------------------------------------------------------------


async def _batch_out(session: Any, batch: Batch) -> BatchOut:
    counts = await PortfolioRepository(session).batch_counts(batch.id)
    total = batch.total_rows
    done = counts.get("decided", 0) + counts.get("invalid", 0) + counts.get("failed", 0)
    pending = total - done
    return BatchOut(
        id=batch.id,
        mode=batch.mode,
        status=batch.status,
        format=batch.format,
        counts=BatchCounts(
            total=total,
            pending=pending,
            decided=counts.get("decided", 0),
            invalid=counts.get("invalid", 0),
            failed=counts.get("failed", 0),
        ),
        progress=round(done / total, 4) if total else 1.0,
        created_at=batch.created_at,
        started_at=batch.started_at,
        completed_at=batch.completed_at,
        results_url=f"/v1/batches/{batch.id}/results",
    )


# A batch file is not JSON and has its own size limit (GuardMiddleware).
BATCHES_PATH = re.compile(r"/v1/batches")


@router.post(
    "/v1/batches",
    status_code=202,
    response_model=BatchOut,
    responses=_PROBLEMS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def create_batch(
    request: Request,
    principal: Writer,
    state: State,
    content_type: Annotated[str, Header()] = "",
) -> BatchOut:
    """A file of up to 100,000 score requests (CSV with a header, or JSONL), decided in the
    background; columns siren, requested_amount, product and optional external_reference."""
    batches.format_of(content_type)  # 415 before reading the body
    body = await request.body()
    batch = await batches.create_batch(state, principal, body, content_type)
    async with opened_session(state.sessionmaker) as session:
        return await _batch_out(session, batch)


async def _batch(session: Any, principal: Principal, batch_id: str) -> Batch:
    batch = await PortfolioRepository(session).batch(principal.tenant_id, principal.mode, batch_id)
    if batch is None:
        raise Problem(404, "batch_not_found", "Batch not found")
    return batch


@router.get("/v1/batches/{batch_id}", response_model=BatchOut, responses=_PROBLEMS)
async def read_batch(batch_id: str, principal: Reader, session: DbSession) -> BatchOut:
    """A batch's progress and counts."""
    return await _batch_out(session, await _batch(session, principal, batch_id))


@router.get(
    "/v1/batches/{batch_id}/results",
    responses={
        **_PROBLEMS,
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
    },
)
async def batch_results(
    batch_id: str,
    principal: Reader,
    session: DbSession,
    state: State,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "csv",
) -> StreamingResponse:
    """One line per row in file order: its decision, its errors, or pending."""
    await _batch(session, principal, batch_id)
    columns = (
        "row", "status", "siren", "external_reference", "decision_id", "score", "grade",
        "decision", "probability_of_default", "proposed_limit", "reasons", "errors",
    )  # fmt: skip

    async def lines() -> AsyncIterator[bytes]:
        if format == "csv":
            yield (",".join(columns) + "\r\n").encode()
        after = 0
        while True:
            async with opened_session(state.sessionmaker) as page_session:
                rows = await PortfolioRepository(page_session).rows_after(
                    batch_id, after, RESULTS_PAGE
                )
            if not rows:
                return
            out = io.StringIO()
            writer = csv.writer(out)
            for row in rows:
                line = batches.result_line(row, format)
                if format == "jsonl":
                    out.write(orjson.dumps(line).decode() + "\n")
                else:
                    writer.writerow(["" if line[c] is None else line[c] for c in columns])
            yield out.getvalue().encode()
            after = rows[-1].row_number

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        lines(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.{format}"'},
    )
