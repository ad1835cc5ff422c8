"""Provider simulators: STET AISP, INSEE Sirene, BODACC and accounting, served from the world.

Payloads are rendered once per (SIREN, as_of) and kept as bytes, so a handler costs a
cache lookup plus whatever latency and faults the SandboxProfile asks for.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from stdnum.fr import siren as std_siren

from b2bscore.sandbox import fec, stet, wire
from b2bscore.sandbox.events import EventStore, RefreshEvents, admin_router
from b2bscore.sandbox.oauth import Grant, Grants, oauth_router
from b2bscore.sandbox.profile import Provider, SandboxProfile
from b2bscore.sources.stet_http import loads_exact
from b2bscore.training.world import Company

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


# --- the world as it moved (sandbox/events.py) -----------------------------------------

_events = EventStore()


def company(siren: str) -> Company:
    """The world's company as its providers show it now, sandbox events applied."""
    return _events.company(siren)


def _clear_renderings() -> None:
    for rendering in _RENDERINGS:
        rendering.cache_clear()


def _use_events(store: EventStore) -> EventStore:
    global _events
    _events = store
    # Renderings are cached per (SIREN, day): an event must reach the next request.
    store.on_change(_clear_renderings)
    store.refresh(force=True)
    return store


# --- cached renderings ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stet:
    accounts: bytes
    balances: dict[str, bytes]


@lru_cache(maxsize=4096)
def _stet(siren: str, as_of: date, dialect: stet.Dialect) -> _Stet:
    c = company(siren)
    balances = {}
    if dialect == "stet14":  # the stet16 bank embeds balances and has no /balances
        balances = {a.resource_id: orjson.dumps(wire.render_balances(a, as_of)) for a in c.accounts}
    return _Stet(accounts=stet.dumps(stet.render_accounts(c, as_of, dialect)), balances=balances)


@lru_cache(maxsize=8192)
def _pages(
    siren: str, as_of: date, rid: str, date_from: date | None, dialect: stet.Dialect
) -> tuple[bytes, ...]:
    c = company(siren)
    acc = wire.find_account(c, rid)
    if acc is None:
        return ()
    pages = stet.render_transaction_pages(acc, as_of, date_from, dialect)
    if c.fault == "bank_truncated" and "next" not in pages[0]["_links"]:
        # The scenario promises a next link that fails, even on a short history.
        href = stet.transactions_href(rid, 2, date_from, dialect)
        pages[0]["_links"]["next"] = {"href": href}
    return tuple(stet.dumps(p) for p in pages)


@lru_cache(maxsize=4096)
def _sirene(siren: str, as_of: date) -> bytes:
    return orjson.dumps(wire.render_sirene(company(siren), as_of))


@lru_cache(maxsize=4096)
def _bodacc(siren: str, as_of: date) -> dict[str, Any]:
    return wire.render_bodacc(company(siren), as_of)


@lru_cache(maxsize=4096)
def _bodacc_bytes(siren: str, as_of: date) -> bytes:
    return orjson.dumps(_bodacc(siren, as_of))


_FEED_WHERE = re.compile(r"dateparution\s*>=\s*date'(\d{4}-\d{2}-\d{2})'")


def _bodacc_feed(since: date, families: set[str], as_of: date) -> list[dict[str, Any]]:
    """Announcements published since a date, oldest first: those the sandbox events made
    (the world's own notices are not enumerable, and never new)."""
    feed = [
        record
        for siren in _events.sirens("proceedings_opened")
        for record in _bodacc(siren, as_of)["results"]
        if record["dateparution"] >= since.isoformat()
        and (not families or record["familleavis"] in families)
    ]
    return sorted(feed, key=lambda r: (r["dateparution"], r["id"]))


@lru_cache(maxsize=4096)
def _books(siren: str, as_of: date) -> dict[str, bytes] | None:
    c = company(siren)
    files = wire.render_fec_files(c, as_of)
    return None if files is None else {f["name"]: fec.encode_fec(c, f["text"]) for f in files}


_RENDERINGS = (_stet, _pages, _sirene, _bodacc, _bodacc_bytes, _books)

# --- the app ------------------------------------------------------------------------


def create_sandbox_app(
    profile: SandboxProfile | None = None,
    events: EventStore | None = None,
    grants: Grants | None = None,
) -> FastAPI:
    """The sandbox serving all four providers from the synthetic world.

    grants: the banks' grant store (default: the file every sandbox process shares).
    """
    prof = profile if profile is not None else SandboxProfile.from_env()
    # One store per process (the renderings are cached per process): an app given no store
    # keeps the one in use, so that a second sandbox app in a process (tests) does not
    # swap another's store for the default one behind its back.
    store = _use_events(events if events is not None else _events)
    # Profile faults are keyed draws per call (sandbox/profile.py); scenario faults come
    # from the world. Both are the same for the same request, whatever the load.
    app = FastAPI(
        title="b2bscore provider sandbox", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.profile = prof
    grants = grants or Grants()
    app.state.grants = grants
    app.include_router(admin_router(store))
    app.include_router(oauth_router(grants, company))
    app.add_middleware(RefreshEvents, store=store)

    async def hang(request: Request) -> None:
        """Sleep past any client deadline, but stop once the client has given up."""
        deadline = time.monotonic() + prof.hang_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if await request.is_disconnected():
                return

    def call_draw(request: Request, provider: Provider, subject: str, purpose: str) -> float:
        """This call's draw for one purpose: keyed by company, path and query, not by time."""
        query = "&".join(
            sorted(f"{k}={v}" for k, v in request.query_params.multi_items() if k != "cursor")
        )
        return prof.draws().uniform(provider, subject, request.url.path, query, purpose)

    async def chaos(
        request: Request, provider: Provider, error: Response, subject: str
    ) -> tuple[Response | None, bool]:
        """Latency, then maybe a fault: (response to send instead, body must be malformed)."""
        p = prof.provider(provider)
        delay = p.latency_s(call_draw(request, provider, subject, "latency"))
        if delay > 0:
            await asyncio.sleep(delay)
        fault = p.fault(call_draw(request, provider, subject, "fault"))
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
        """Authenticate the PSU token and apply faults; (company, response, malformed).

        A token issued by a sandbox bank's consent flow (sandbox/oauth.py) opens the granted
        accounts and categories only, whatever the world says of the company's consent; the
        public ``sandbox-SIREN`` token opens the world's pre-consented companies.
        """
        auth = request.headers.get("authorization", "")
        grant: Grant | None = None
        if auth.startswith("Bearer at-"):
            grant = grants.grant_of(auth[len("Bearer ") :])
            siren = grant.siren if grant is not None else ""
        else:
            siren = auth[len(_TOKEN_PREFIX) :] if auth.startswith(_TOKEN_PREFIX) else ""
        request.state.grant = grant
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
        resp, malformed = await chaos(request, "open_banking", unavailable, siren)
        if resp is not None:
            return c, resp, False
        if c.fault == "bank_timeout":
            await hang(request)
            return c, Response(status_code=504), False
        if grant is None and (c.fault == "no_bank_consent" or not c.bank_consent):
            return (
                c,
                stet_error(request, 403, "consent_missing", "No valid consent for this PSU"),
                False,
            )
        return c, None, malformed

    def refused(request: Request, resource_id: str | None, scope: str) -> Response | None:
        """403 when the request's grant does not cover this account or category."""
        grant: Grant | None = request.state.grant
        if grant is None:
            return None
        if scope not in grant.scopes or (
            resource_id is not None and resource_id not in grant.accounts
        ):
            return stet_error(request, 403, "consent_missing", f"No consent for {scope}")
        return None

    def granted_accounts(request: Request, content: bytes) -> bytes:
        """GET /accounts cut to the granted accounts (balances only when granted)."""
        grant: Grant | None = request.state.grant
        if grant is None:
            return content
        doc = loads_exact(content)
        kept = [a for a in doc["accounts"] if a["resourceId"] in grant.accounts]
        if "balances" not in grant.scopes:
            for account in kept:
                account.pop("balances", None)
        doc["accounts"] = kept
        return stet.dumps(doc)

    def dialect(request: Request) -> stet.Dialect:
        """The bank (dialect) a request is addressed to, from its path."""
        return "stet16" if request.url.path.startswith(stet.PREFIXES["stet16"] + "/") else "stet14"

    @app.get("/stet/v1/accounts")
    @app.get("/stet/v1.6/accounts")
    async def stet_accounts(request: Request) -> Response:
        """STET: the PSU's payment accounts."""
        c, resp, malformed = await stet_gate(request)
        if resp is not None or c is None:
            return resp or Response(status_code=500)
        content = _stet(c.siren, _today(), dialect(request)).accounts
        return body(granted_accounts(request, content), malformed)

    @app.get("/stet/v1/end-user-identity")
    @app.get("/stet/v1.6/end-user-identity")
    async def stet_identity(request: Request) -> Response:
        """STET: the identity of the connected PSU (a consent's psuIdentity)."""
        c, resp, malformed = await stet_gate(request)
        if resp is not None or c is None:
            return resp or Response(status_code=500)
        if (denied := refused(request, None, "identity")) is not None:
            return denied
        prefix = stet.PREFIXES[dialect(request)]
        content = orjson.dumps(
            {"connectedPsu": c.name, "_links": {"self": {"href": f"{prefix}/end-user-identity"}}}
        )
        return body(content, malformed)

    @app.get("/stet/v1/accounts/{resource_id}/balances")
    async def stet_balances(request: Request, resource_id: str) -> Response:
        """STET: balances of one account (the stet14 bank only)."""
        c, resp, malformed = await stet_gate(request)
        if resp is not None or c is None:
            return resp or Response(status_code=500)
        if (denied := refused(request, resource_id, "balances")) is not None:
            return denied
        content = _stet(c.siren, _today(), "stet14").balances.get(resource_id)
        if content is None:
            return stet_error(request, 404, "not_found", "Unknown account")
        return body(content, malformed)

    @app.get("/stet/v1/accounts/{resource_id}/transactions")
    @app.get("/stet/v1.6/accounts/{resource_id}/transactions")
    async def stet_transactions(
        request: Request,
        resource_id: str,
        date_from_text: Annotated[str | None, Query(alias="dateFrom")] = None,
        page: Annotated[int, Query(ge=1)] = 1,
        cursor: str | None = None,
    ) -> Response:
        """STET: one page of an account's transactions, newest first."""
        try:
            date_from = stet.parse_date_from(date_from_text)
        except ValueError:
            return stet_error(request, 400, "bad_request", "dateFrom is not an ISO date(-time)")
        c, resp, malformed = await stet_gate(request)
        if resp is not None or c is None:
            return resp or Response(status_code=500)
        if (denied := refused(request, resource_id, "transactions")) is not None:
            return denied
        kind = dialect(request)
        pages = _pages(c.siren, _today(), resource_id, date_from, kind)
        if not pages:
            return stet_error(request, 404, "not_found", "Unknown account")
        broken = cursor == "expired" or (c.fault == "bank_truncated" and page >= 2)
        if broken:
            return stet_error(request, 500, "internal_error", "Pagination cursor lost")
        if page > len(pages):
            return stet_error(request, 400, "bad_request", "Page out of range")
        content = pages[page - 1]
        if (
            call_draw(request, "open_banking", c.siren, "truncated")
            < prof.open_banking.truncated_rate
        ):
            # The page looks fine but promises a next page that will fail.
            doc = loads_exact(content)  # numbers stay Decimal, written back as they were
            href = stet.transactions_href(resource_id, page + 1, date_from, kind)
            doc["_links"]["next"] = {"href": href + "&cursor=expired"}
            content = stet.dumps(doc)
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
        resp, malformed = await chaos(request, "sirene", unavailable, siren)
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
        where: str | None = None,
    ) -> Response:
        """BODACC: announcements of one company, newest first; or the feed since a date."""
        sirens = [
            r.split(":", 1)[1].replace(" ", "") for r in refine or [] if r.startswith("registre:")
        ]
        since = _FEED_WHERE.fullmatch(where.strip()) if where else None
        if not sirens and since is not None:
            families = {r.split(":", 1)[1] for r in refine or [] if r.startswith("familleavis:")}
            feed = _bodacc_feed(date.fromisoformat(since.group(1)), families, _today())
            end = None if limit == -1 else offset + limit
            return _json({"total_count": len(feed), "results": feed[offset:end]})
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
        siren = sirens[0]
        resp, malformed = await chaos(request, "bodacc", unavailable, siren)
        if resp is not None:
            return resp
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
        resp, malformed = await chaos(request, "accounting", unavailable, siren)
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
