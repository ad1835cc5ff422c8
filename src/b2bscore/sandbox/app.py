"""Provider simulators: STET AISP, INSEE Sirene, BODACC and accounting, served from the world.

Payloads are rendered once per (SIREN, as_of) and kept as bytes, so a handler costs a
cache lookup plus whatever latency and faults the SandboxProfile asks for.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from stdnum.fr import siren as std_siren

from b2bscore.sandbox import fec, wire
from b2bscore.sandbox.profile import Provider, SandboxProfile
from b2bscore.training.world import Company, company

JSON = "application/json"
_TOKEN_PREFIX = "Bearer sandbox-"  # noqa: S105  (public sandbox token scheme)


def _today() -> date:
    return datetime.now(UTC).date()


def _valid(siren: str) -> bool:
    return len(siren) == 9 and siren.isdigit() and bool(std_siren.is_valid(siren))


def _json(body: Any, status: int = 200) -> Response:
    return Response(content=orjson.dumps(body), status_code=status, media_type=JSON)


def _truncated(body: bytes) -> bytes:
    """A body cut in the middle, as a dropped connection behind a proxy would leave it."""
    # Cut on a character boundary: the body is broken JSON, not broken UTF-8.
    return body[: max(1, len(body) // 2)].decode("utf-8", "ignore").encode()


# --- cached renderings ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stet:
    accounts: bytes
    balances: dict[str, bytes]


@lru_cache(maxsize=4096)
def _stet(siren: str, as_of: date) -> _Stet:
    c = company(siren)
    return _Stet(
        accounts=orjson.dumps(wire.render_accounts(c, as_of)),
        balances={a.resource_id: orjson.dumps(wire.render_balances(a, as_of)) for a in c.accounts},
    )


@lru_cache(maxsize=8192)
def _pages(siren: str, as_of: date, rid: str, date_from: date | None) -> tuple[bytes, ...]:
    c = company(siren)
    acc = wire.find_account(c, rid)
    if acc is None:
        return ()
    pages = wire.render_transaction_pages(acc, as_of, date_from)
    if c.fault == "bank_truncated" and "next" not in pages[0]["_links"]:
        # The scenario promises a next link that fails, even on a short history.
        pages[0]["_links"]["next"] = {"href": wire.transactions_href(rid, 2, date_from)}
    return tuple(orjson.dumps(p) for p in pages)


@lru_cache(maxsize=4096)
def _sirene(siren: str, as_of: date) -> bytes:
    return orjson.dumps(wire.render_sirene(company(siren), as_of))


@lru_cache(maxsize=4096)
def _bodacc(siren: str, as_of: date) -> dict[str, Any]:
    return wire.render_bodacc(company(siren), as_of)


@lru_cache(maxsize=4096)
def _bodacc_bytes(siren: str, as_of: date) -> bytes:
    return orjson.dumps(_bodacc(siren, as_of))


@lru_cache(maxsize=4096)
def _books(siren: str, as_of: date) -> dict[str, bytes] | None:
    c = company(siren)
    files = wire.render_fec_files(c, as_of)
    return None if files is None else {f["name"]: fec.encode_fec(c, f["text"]) for f in files}


# --- the app ------------------------------------------------------------------------


def create_sandbox_app(profile: SandboxProfile | None = None) -> FastAPI:
    """The sandbox serving all four providers from the synthetic world."""
    prof = profile if profile is not None else SandboxProfile.from_env()
    # Random faults only; scenario faults are deterministic and come from the world.
    rng = random.Random()
    app = FastAPI(
        title="b2bscore provider sandbox", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.profile = prof

    async def hang(request: Request) -> None:
        """Sleep past any client deadline, but stop once the client has given up."""
        deadline = time.monotonic() + prof.hang_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if await request.is_disconnected():
                return

    async def chaos(
        request: Request, provider: Provider, error: Response
    ) -> tuple[Response | None, bool]:
        """Latency, then maybe a fault: (response to send instead, body must be malformed)."""
        p = prof.provider(provider)
        delay = p.latency_s(rng)
        if delay > 0:
            await asyncio.sleep(delay)
        fault = p.fault(rng)
        if fault == "timeout":
            await hang(request)
            return Response(status_code=504), False
        if fault == "error":
            return error, False
        return None, fault == "malformed"

    def body(content: bytes, malformed: bool, status: int = 200) -> Response:
        return Response(
            content=_truncated(content) if malformed else content,
            status_code=status,
            media_type=JSON,
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness of the sandbox and the profile it runs."""
        return _json({"status": "ok", "profile": prof.name})

    # --- STET PSD2 AISP -------------------------------------------------------------

    def stet_error(request: Request, status: int, error: str, message: str) -> Response:
        return _json(
            {
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                "status": status,
                "error": error,
                "message": message,
                "path": request.url.path,
            },
            status,
        )

    async def stet_gate(request: Request) -> tuple[Company | None, Response | None, bool]:
        """Authenticate the PSU token and apply faults; (company, response, malformed)."""
        auth = request.headers.get("authorization", "")
        siren = auth[len(_TOKEN_PREFIX) :] if auth.startswith(_TOKEN_PREFIX) else ""
        if not _valid(siren):
            return (
                None,
                stet_error(request, 401, "unauthorized", "Missing or invalid PSU access token"),
                False,
            )
        c = company(siren)
        unavailable = stet_error(
            request, 503, "service_unavailable", "ASPSP temporarily unavailable"
        )
        resp, malformed = await chaos(request, "open_banking", unavailable)
        if resp is not None:
            return c, resp, False
        if c.fault == "bank_timeout":
            await hang(request)
            return c, Response(status_code=504), False
        if c.fault == "no_bank_consent" or not c.bank_consent:
            return (
                c,
                stet_error(request, 403, "consent_missing", "No valid consent for this PSU"),
                False,
            )
        return c, None, malformed

    @app.get("/stet/v1/accounts")
    async def stet_accounts(request: Request) -> Response:
        """STET: the PSU's payment accounts."""
        c, resp, malformed = await stet_gate(request)
        if resp is not None or c is None:
            return resp or Response(status_code=500)
        return body(_stet(c.siren, _today()).accounts, malformed)

    @app.get("/stet/v1/accounts/{resource_id}/balances")
    async def stet_balances(request: Request, resource_id: str) -> Response:
        """STET: balances of one account."""
        c, resp, malformed = await stet_gate(request)
        if resp is not None or c is None:
            return resp or Response(status_code=500)
        content = _stet(c.siren, _today()).balances.get(resource_id)
        if content is None:
            return stet_error(request, 404, "not_found", "Unknown account")
        return body(content, malformed)

    @app.get("/stet/v1/accounts/{resource_id}/transactions")
    async def stet_transactions(
        request: Request,
        resource_id: str,
        date_from: Annotated[date | None, Query(alias="dateFrom")] = None,
        page: Annotated[int, Query(ge=1)] = 1,
        cursor: str | None = None,
    ) -> Response:
        """STET: one page of an account's transactions, newest first."""
        c, resp, malformed = await stet_gate(request)
        if resp is not None or c is None:
            return resp or Response(status_code=500)
        pages = _pages(c.siren, _today(), resource_id, date_from)
        if not pages:
            return stet_error(request, 404, "not_found", "Unknown account")
        broken = cursor == "expired" or (c.fault == "bank_truncated" and page >= 2)
        if broken:
            return stet_error(request, 500, "internal_error", "Pagination cursor lost")
        if page > len(pages):
            return stet_error(request, 400, "bad_request", "Page out of range")
        content = pages[page - 1]
        if rng.random() < prof.open_banking.truncated_rate:
            # The page looks fine but promises a next page that will fail.
            doc = orjson.loads(content)
            href = wire.transactions_href(resource_id, page + 1, date_from) + "&cursor=expired"
            doc["_links"]["next"] = {"href": href}
            content = orjson.dumps(doc)
        return body(content, malformed)

    # --- INSEE Sirene ---------------------------------------------------------------

    @app.get("/sirene/v3.11/siren/{siren}")
    async def sirene(request: Request, siren: str) -> Response:
        """Sirene: the legal unit and its periods."""
        if len(siren) != 9 or not siren.isdigit():
            return _json(
                {
                    "header": {
                        "statut": 400,
                        "message": f"Erreur de syntaxe dans le paramètre siren={siren}",
                    }
                },
                400,
            )
        if not _valid(siren):
            return _json(
                {
                    "header": {
                        "statut": 404,
                        "message": f"Aucun élément trouvé pour le siren {siren}",
                    }
                },
                404,
            )
        unavailable = _json(
            {"header": {"statut": 503, "message": "Service momentanément indisponible"}}, 503
        )
        resp, malformed = await chaos(request, "sirene", unavailable)
        if resp is not None:
            return resp
        if company(siren).fault == "registry_error":
            return unavailable
        return body(_sirene(siren, _today()), malformed)

    # --- BODACC (OpenDataSoft explore v2.1) -----------------------------------------

    @app.get("/bodacc/api/explore/v2.1/catalog/datasets/annonces-commerciales/records")
    async def bodacc(
        request: Request,
        refine: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=-1, le=100)] = 10,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        """BODACC: announcements of one company, newest first."""
        sirens = [
            r.split(":", 1)[1].replace(" ", "") for r in refine or [] if r.startswith("registre:")
        ]
        if not sirens:
            return _json(
                {
                    "error_code": "InvalidRESTParameterError",
                    "message": "This sandbox needs refine=registre:<siren>",
                },
                400,
            )
        unavailable = _json(
            {"error_code": "ServiceUnavailable", "message": "Service temporarily unavailable"}, 503
        )
        resp, malformed = await chaos(request, "bodacc", unavailable)
        if resp is not None:
            return resp
        siren = sirens[0]
        if not _valid(siren):
            return body(b'{"total_count":0,"results":[]}', malformed)
        as_of = _today()
        full = _bodacc(siren, as_of)
        if offset == 0 and (limit == -1 or limit >= full["total_count"]):
            return body(_bodacc_bytes(siren, as_of), malformed)
        end = None if limit == -1 else offset + limit
        sliced = {"total_count": full["total_count"], "results": full["results"][offset:end]}
        return body(orjson.dumps(sliced), malformed)

    # --- accounting -----------------------------------------------------------------

    def books_gate(siren: str) -> dict[str, bytes] | Response:
        if not _valid(siren):
            return _json({"error": "not_found", "message": f"Unknown company {siren}"}, 404)
        files = _books(siren, _today())
        if files is None:
            return _json(
                {"error": "not_found", "message": f"No books connected for company {siren}"}, 404
            )
        return files

    @app.get("/accounting/v1/companies/{siren}/fec")
    async def fec_index(request: Request, siren: str) -> Response:
        """Accounting: the company's FEC files (up to three fiscal years), newest first."""
        unavailable = _json({"error": "unavailable", "message": "Try again later"}, 503)
        resp, malformed = await chaos(request, "accounting", unavailable)
        if resp is not None:
            return resp
        files = books_gate(siren)
        if isinstance(files, Response):
            return files
        index = {
            "siren": siren,
            "files": [
                {"name": name, "href": f"/accounting/v1/companies/{siren}/fec/{name}"}
                for name in files
            ],
        }
        return body(orjson.dumps(index), malformed)

    @app.get("/accounting/v1/companies/{siren}/fec/{name}")
    async def fec_file(request: Request, siren: str, name: str) -> Response:
        """Accounting: one FEC file, as the company's software wrote it."""
        files = books_gate(siren)
        if isinstance(files, Response):
            return files
        content = files.get(name)
        if content is None:
            return _json({"error": "not_found", "message": f"No file {name}"}, 404)
        if company(siren).fault == "accounting_malformed":
            # The export tool died half-way: the file stops in the middle of a line.
            content = content[: max(1, len(content) // 2)]
        return Response(content=content, media_type="text/plain")

    return app


def create_sandbox_app_from_env() -> FastAPI:
    """The sandbox with the profile of B2BSCORE_SANDBOX_PROFILE (uvicorn factory)."""
    return create_sandbox_app(SandboxProfile.from_env())
