"""A small provider app with the faults the adapters must survive, served over real HTTP.

Routes mirror the sandbox (docs/PROVIDERS.md); the SIREN (or the PSU token) picks the
behaviour, so one server serves every test.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.sources import payloads

OK = "100000001"
BANK_HANG = "100000002"
BANK_TRUNCATED = "100000003"
NO_CONSENT = "100000004"
SIRENE_DOWN = "100000005"
NO_BOOKS = "100000006"
BOOKS_MALFORMED = "100000007"
BODACC_DOWN = "100000008"
BANK_PAGE_LOOP = "100000009"
BANK_FOREIGN_LINK = "100000010"
ALL_HANG = "100000011"
UNKNOWN = "100000012"
BOOKS_UNBALANCED = "100000013"
BODACC_GARBLED = "100000014"  # one record without dateparution, one jugement as an object

HANG_SECONDS = 3.0


def _bank(siren: str, base: str) -> dict[str, Any]:
    """The accounts of a company: a paginated main account and a second one."""
    # Relative and absolute HAL links both occur in the wild.
    return payloads.accounts(
        payloads.account(f"{siren}-main", payloads.IBAN_MAIN),
        payloads.account(f"{siren}-2", payloads.IBAN_SAVINGS, base=f"{base}/stet/v1"),
    )


def _page(siren: str, rid: str, number: int, base: str) -> dict[str, Any] | None:
    if rid.endswith("-2"):
        return payloads.page([payloads.tx("100.00", "CRDT")]) if number == 1 else None
    pages = 3
    if number > pages:
        return None
    txs = [payloads.tx(f"{number}.00", "DBIT"), payloads.tx(f"-{number}0.00", "CRDT")]
    nxt: str | None = f"/stet/v1/accounts/{rid}/transactions?page={number + 1}"
    if siren == BANK_PAGE_LOOP:
        nxt = f"/stet/v1/accounts/{rid}/transactions?page=1"
    elif siren == BANK_FOREIGN_LINK:
        nxt = "http://198.51.100.7/steal"
    elif number == pages:
        nxt = None
    return payloads.page(txs, nxt)


def create_fake_app() -> FastAPI:
    """The fault-injecting provider app; app.state.hits counts calls per (route, siren)."""
    app = FastAPI()
    hits: Counter[tuple[str, str]] = Counter()
    app.state.hits = hits

    def siren_of(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        return auth.removeprefix("Bearer sandbox-")

    def consent_error(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "timestamp": "2026-01-31T00:00:00Z",
                "status": 403,
                "error": "consent_missing",
                "message": "No consent",
                "path": request.url.path,
            },
            status_code=403,
        )

    @app.get("/stet/v1/accounts")
    async def stet_accounts(request: Request) -> Response:
        siren = siren_of(request)
        hits["accounts", siren] += 1
        if siren in (BANK_HANG, ALL_HANG):
            await asyncio.sleep(HANG_SECONDS)
        if siren == NO_CONSENT:
            return consent_error(request)
        return JSONResponse(_bank(siren, str(request.base_url).rstrip("/")))

    @app.get("/stet/v1/accounts/{rid}/balances")
    async def stet_balances(rid: str, request: Request) -> Response:
        hits["balances", siren_of(request)] += 1
        return JSONResponse(payloads.balances(CLBD="1000.00"))

    @app.get("/stet/v1/accounts/{rid}/transactions")
    async def stet_transactions(rid: str, request: Request, page: int = 1) -> Response:
        siren = siren_of(request)
        hits["transactions", siren] += 1
        if siren == BANK_TRUNCATED and page == 2:
            return JSONResponse({"status": 500, "error": "internal"}, status_code=500)
        body = _page(siren, rid, page, str(request.base_url).rstrip("/"))
        if body is None:
            return JSONResponse({"status": 404, "error": "not_found"}, status_code=404)
        return JSONResponse(body)

    @app.get("/sirene/v3.11/siren/{siren}")
    async def sirene(siren: str) -> Response:
        hits["sirene", siren] += 1
        if siren == ALL_HANG:
            await asyncio.sleep(HANG_SECONDS)
        if siren == SIRENE_DOWN:
            return Response("Service Unavailable", status_code=503)
        if siren == UNKNOWN:
            message = f"Aucun élément trouvé pour le siren {siren}"
            return JSONResponse({"header": {"statut": 404, "message": message}}, status_code=404)
        return JSONResponse(payloads.sirene(siren))

    @app.get("/bodacc/api/explore/v2.1/catalog/datasets/annonces-commerciales/records")
    async def bodacc(refine: str, limit: int = 10) -> Response:
        siren = refine.removeprefix("registre:")
        hits["bodacc", siren] += 1
        if siren == BODACC_DOWN:
            return JSONResponse({"error": "boom"}, status_code=500)
        body = payloads.bodacc(siren)
        if siren == BODACC_GARBLED:
            del body["results"][0]["dateparution"]
            collective = body["results"][1]
            collective["jugement"] = orjson.loads(collective["jugement"])
        return JSONResponse(body)

    @app.get("/accounting/v1/companies/{siren}/fec")
    async def fec_index(siren: str) -> Response:
        hits["accounting", siren] += 1
        if siren == ALL_HANG:
            await asyncio.sleep(HANG_SECONDS)
        if siren in (NO_BOOKS, UNKNOWN):
            return JSONResponse({"error": "not_found"}, status_code=404)
        if siren == BOOKS_MALFORMED:
            return Response('{"siren": "1000', media_type="application/json")
        name = payloads.fec_name(siren, 2025)
        href = f"/accounting/v1/companies/{siren}/fec/{name}"
        return JSONResponse({"siren": siren, "files": [{"name": name, "href": href}]})

    @app.get("/accounting/v1/companies/{siren}/fec/{name}")
    async def fec_file(siren: str, name: str) -> Response:
        lines = payloads.SMALL_TRIAL_BALANCE
        if siren == BOOKS_UNBALANCED:
            lines = [*lines, payloads.line("471000", debit="50.00")]
        return Response(payloads.fec_text(lines), media_type="text/plain")

    return app
