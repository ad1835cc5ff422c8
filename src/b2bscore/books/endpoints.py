"""POST /v1/companies/{siren}/books: the lender uploads a company's FEC."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from stdnum.fr import siren as std_siren

from b2bscore.books.schemas import BooksOut
from b2bscore.books.service import upload_books
from b2bscore.kit.deps import DbSession, State
from b2bscore.kit.problems import Problem
from b2bscore.portfolio.changes import after_books_upload
from b2bscore.tenants.auth import requires
from b2bscore.tenants.service import Principal

router = APIRouter(prefix="/v1/companies", tags=["books"])
# The guard middleware lets this path through with its own size limit and any media type.
BOOKS_PATH = re.compile(r"^/v1/companies/[^/]+/books$")
FEC_FILE_NAME = re.compile(r"(?P<siren>\d{9})FEC\d{8}", re.IGNORECASE)

BooksWriter = Annotated[Principal, requires("score:write", rate_limited=True)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def _invalid(field: str, message: str) -> Problem:
    return Problem(
        422,
        "validation_error",
        "Invalid request",
        f"Invalid fields: {field}",
        errors=[{"field": field, "message": message, "type": "value_error"}],
    )


async def _body(request: Request, limit: int) -> bytes:
    # Counted as it arrives: a chunked upload carries no Content-Length to check first.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(
                413,
                "payload_too_large",
                "Request body too large",
                f"A FEC file may not exceed {limit} bytes.",
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/{siren}/books",
    status_code=201,
    response_model=BooksOut,
    responses={401: _PROBLEM, 403: _PROBLEM, 413: _PROBLEM, 422: _PROBLEM},
    summary="Upload a company's books as a FEC file (the raw file is the body)",
)
async def post_books(
    siren: str,
    request: Request,
    principal: BooksWriter,
    session: DbSession,
    state: State,
    filename: Annotated[str | None, Query(max_length=255)] = None,
) -> BooksOut:
    """Validate the FEC and store it, encrypted, for the caller's tenant and mode."""
    compact = siren.replace(" ", "")
    if not (len(compact) == 9 and compact.isdigit() and std_siren.is_valid(compact)):
        raise _invalid("siren", "not a valid SIREN")
    named = FEC_FILE_NAME.search(filename or "")
    if named is not None and named.group("siren") != compact:
        # A file named after another company is most likely the wrong upload.
        raise _invalid("filename", "names another SIREN than the path")
    raw = await _body(request, state.settings.books_max_bytes)
    if not raw:
        raise _invalid("body", "empty: send the FEC file as the body")
    stored = await upload_books(
        session,
        keyring=state.keyring,
        cache=state.cache,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        siren=compact,
        raw=raw,
        file_name=filename,
    )
    # New books (an accounting period) re-check the tenant's watch of the company.
    await after_books_upload(
        state.jobs,
        state.sessionmaker,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        siren=compact,
    )
    return stored
