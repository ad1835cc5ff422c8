"""The console's pages under /console: thin handlers over console.service.

Server-rendered (Jinja2, autoescape on) with htmx as the only script, served from this
package (no CDN). Every response carries a Content-Security-Policy without inline scripts
or styles; the headers are set here, per response, so the API's hot path runs no extra
middleware.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl, urlencode

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from b2bscore.console import charts, i18n, service
from b2bscore.console.sessions import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGN_IN_CSRF_COOKIE,
    ConsoleSession,
    current_session,
    new_sign_in_token,
    sign_in,
    sign_out,
    tokens_match,
)
from b2bscore.features.catalog import FAMILY_LABELS, SPECS_BY_NAME
from b2bscore.features.types import Product
from b2bscore.kit.db import opened_session
from b2bscore.kit.deps import DbSession, Sessions, State
from b2bscore.kit.state import AppState
from b2bscore.tenants.service import Principal
from b2bscore.webhooks import service as webhooks

_HERE: Final = Path(__file__).parent
LANG_COOKIE: Final = "b2b_console_lang"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_MAX_FORM_FIELDS: Final = 16

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,  # every provider string (names, labels, details) is escaped
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_environment)


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    # A fixed list read once: nothing else under the package can be served.
    types = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
    types |= {".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}
    files: dict[str, tuple[bytes, str, str]] = {}
    root = _HERE / "static"
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in types:
            content = path.read_bytes()
            version = hashlib.sha256(content).hexdigest()[:12]
            files[path.relative_to(root).as_posix()] = (content, types[path.suffix], version)
    return files


STATIC: Final = _static_files()


def static_url(name: str) -> str:
    """URL of a packaged static file, versioned by its content so it caches forever."""
    return f"/console/static/{name}?v={STATIC[name][2]}"


# --- plumbing --------------------------------------------------------------------------


def _lang(request: Request) -> i18n.Lang:
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or ""
    if asked in i18n.LANGS:
        return "fr" if asked == "fr" else "en"
    accept = request.headers.get("accept-language", "").lower()
    return "fr" if accept.startswith("fr") else "en"


def _with_lang(request: Request, lang: str) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return f"{request.url.path}?{urlencode([*params, ('lang', lang)])}"


def _secure_headers(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response


def _page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    session: ConsoleSession | None,
    status_code: int = 200,
) -> Response:
    lang = _lang(request)
    t = i18n.translator(lang)
    full: dict[str, Any] = {
        "t": t,
        "lang": lang,
        "other_lang": "fr" if lang == "en" else "en",
        "lang_url": _with_lang(request, "fr" if lang == "en" else "en"),
        "session": session,
        "csrf_field": CSRF_FIELD,
        "csrf_token": session.csrf_token if session else "",
        "static_url": static_url,
        "has_text": i18n.has_text,
        "path": request.url.path,
        "decision_word": lambda d: i18n.decision_word(d, lang),
        "product_word": lambda p: i18n.product_word(p, lang),
        "source_word": lambda s: i18n.source_word(s, lang),
        "status_word": lambda s: i18n.status_word(s, lang),
        "money": lambda v: i18n.money(v, lang),
        "number": lambda v, d=2: i18n.number(v, lang, d),
        "percent": lambda v, d=2: i18n.percent(v, lang, d),
        "timestamp": lambda v: i18n.timestamp(v, lang),
        "age": lambda d: i18n.age(d, datetime.now(UTC).date(), lang),
        **context,
    }
    response = templates.TemplateResponse(request, template, full, status_code=status_code)
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 86400,
            path="/console",
            httponly=True,
            samesite="strict",
        )
    return _secure_headers(response)


def _redirect(url: str, request: Request) -> Response:
    if request.headers.get("hx-request") == "true":
        # htmx would follow a 303 inside the swap; this makes the whole page move.
        response: Response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    return _secure_headers(response)


def _to_sign_in(request: Request) -> Response:
    target = request.url.path if request.method == "GET" else "/console/score"
    return _redirect(f"/console/sign-in?{urlencode({'next': target, 'ended': '1'})}", request)


async def _form(request: Request) -> dict[str, str]:
    # The guard middleware caps the body size; the field count is capped here.
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
    except ValueError:
        return {}
    return {k: v for k, v in pairs if len(v) <= 512}


async def _signed_in(request: Request, state: AppState, db: Any) -> ConsoleSession | None:
    return await current_session(db, state.cache, request.cookies.get(SESSION_COOKIE))


def _forbidden(request: Request, session: ConsoleSession, scope: str) -> Response:
    message = i18n.translator(_lang(request))("forbidden", scope=scope)
    return _page(request, "error.html", {"message": message}, session=session, status_code=403)


def _csrf_refused(request: Request, session: ConsoleSession | None) -> Response:
    message = i18n.translator(_lang(request))("csrf_failed")
    return _page(request, "error.html", {"message": message}, session=session, status_code=403)


def _safe_next(target: str | None) -> str:
    # Only a path of this console: never an open redirect.
    if target and target.startswith("/console/") and "//" not in target and "\\" not in target:
        return target
    return "/console/score"


class Refused(Exception):
    """A guard's answer in place of the page: sign in again, or 403."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _ConsoleRoute(APIRoute):
    """A console route: a guard that refuses answers with its own page, not a 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, with a guard's refusal turned into its response."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as refused:
                return refused.response

        return guarded


router = APIRouter(prefix="/console", include_in_schema=False, route_class=_ConsoleRoute)


@dataclass(frozen=True, slots=True)
class Console:
    """A request that passed its guard: who is signed in, the form it posted (if any)."""

    request: Request
    session: ConsoleSession
    form: Mapping[str, str] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        """The key the session was opened with (its tenant, mode and scopes)."""
        return self.session.principal

    @property
    def lang(self) -> i18n.Lang:
        """The page's language."""
        return _lang(self.request)

    def page(self, template: str, context: Mapping[str, Any], status_code: int = 200) -> Response:
        """A page of this session."""
        return _page(self.request, template, context, session=self.session, status_code=status_code)

    def message(self, key: str, status_code: int) -> Response:
        """The error page with one message."""
        text = i18n.translator(self.lang)(key)
        return self.page("error.html", {"message": text}, status_code)


def _guard(scope: str, *, posted: bool = False) -> Any:
    """A dependency: signed in (else to sign-in), the form's CSRF token, then scope (else 403).

    The session is read on a session of its own, released at once: the score form must not
    hold a connection while it waits for the providers.
    """

    async def guard(request: Request, state: State, sessions: Sessions) -> Console:
        async with opened_session(sessions) as db:
            session = await _signed_in(request, state, db)
        if session is None:
            raise Refused(_to_sign_in(request))
        form: dict[str, str] = {}
        if posted:
            form = await _form(request)
            if not session.csrf_matches(form.get(CSRF_FIELD)):
                raise Refused(_csrf_refused(request, session))
        if not session.principal.has_scope(scope):
            raise Refused(_forbidden(request, session, scope))
        return Console(request, session, form)

    return Depends(guard)


# Pages: who may see them. Posts: who may act, after the CSRF check.
Reader = Annotated[Console, _guard("decisions:read")]
Scorer = Annotated[Console, _guard("score:write")]
Admin = Annotated[Console, _guard("admin")]
ReaderPost = Annotated[Console, _guard("decisions:read", posted=True)]
# Writing actions (score, redeliver, revoke) need the writing scope, as in the API.
WriterPost = Annotated[Console, _guard("score:write", posted=True)]


# --- static files, entry, sign in and out ---------------------------------------------


@router.get("/static/{name:path}")
async def static_file(name: str) -> Response:
    """A packaged stylesheet, script, icon or licence."""
    entry = STATIC.get(name)
    if entry is None:
        return _secure_headers(Response(status_code=404))
    content, media_type, _ = entry
    response = Response(content, media_type=media_type)
    response.headers.update(
        {
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        }
    )
    return response


@router.get("")
async def console_home(request: Request, state: State, db: DbSession) -> Response:
    """The score page when signed in, else the sign-in page."""
    session = await _signed_in(request, state, db)
    return _redirect("/console/score" if session else "/console/sign-in", request)


@router.get("/sign-in")
async def sign_in_page(request: Request, state: State, db: DbSession) -> Response:
    """The sign-in form, with its double-submit CSRF token."""
    if await _signed_in(request, state, db):
        return _redirect(_safe_next(request.query_params.get("next")), request)
    return _sign_in_form(request, error=None)


def _sign_in_form(request: Request, error: str | None) -> Response:
    token = new_sign_in_token()
    params = request.query_params
    notice = (
        "signed_out"
        if params.get("signed_out")
        else "session_expired"
        if params.get("ended")
        else None
    )
    response = _page(
        request,
        "sign_in.html",
        {
            "sign_in_token": token,
            "error": error,
            "notice": notice,
            "next": _safe_next(params.get("next")),
        },
        session=None,
    )
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE, token, max_age=3600, path="/console", httponly=True, samesite="strict"
    )
    return response


@router.post("/sign-in")
async def sign_in_submit(request: Request, state: State, db: DbSession) -> Response:
    """Exchange an API key for a session; the key goes no further than this call."""
    form = await _form(request)
    if not tokens_match(request.cookies.get(SIGN_IN_CSRF_COOKIE), form.get(CSRF_FIELD)):
        return _csrf_refused(request, None)
    session = await sign_in(
        db, state.cache, form.get("api_key", "")[:256], state.settings.console_session_ttl_seconds
    )
    if session is None:
        return _sign_in_form(request, error="bad_key")
    response = _redirect(_safe_next(form.get("next")), request)
    response.set_cookie(
        SESSION_COOKIE,
        session.session_id,
        max_age=max(1, math.floor(session.expires_at - datetime.now(UTC).timestamp())),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=session.mode == "live",
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path="/console")
    return response


@router.post("/sign-out")
async def sign_out_submit(request: Request, state: State, db: DbSession) -> Response:
    """End the session server-side and drop its cookie."""
    session = await _signed_in(request, state, db)
    form = await _form(request)
    if session is not None and not session.csrf_matches(form.get(CSRF_FIELD)):
        return _csrf_refused(request, session)
    await sign_out(state.cache, request.cookies.get(SESSION_COOKIE))
    response = _redirect("/console/sign-in?signed_out=1", request)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# --- score -------------------------------------------------------------------------------


def _score_context(
    form: Mapping[str, str],
    outcome: service.ScoreOutcome | None,
    lang: i18n.Lang,
) -> dict[str, Any]:
    answer = outcome.answer if outcome else None
    context: dict[str, Any] = {
        "form": {"siren": form.get("siren", ""), "amount": form.get("amount", "")},
        "product": form.get("product", Product.TERM_LOAN.value),
        "products": [p.value for p in Product],
        "errors": outcome.field_errors if outcome else {},
        "problem": outcome.problem if outcome else None,
        # A fresh key per form shown: resubmitting the same form cannot decide twice.
        "idempotency_key": str(uuid.uuid4()),
        "answer": None,
    }
    if answer is not None:
        reasons = [r.model_dump() for r in answer.reasons]
        context["answer"] = answer
        context["result"] = _result_view(
            reasons=reasons,
            sources={k: v.model_dump(mode="json") for k, v in answer.sources.items()},
            lang=lang,
        )
    return context


def _result_view(
    *, reasons: list[dict[str, Any]], sources: dict[str, Any], lang: i18n.Lang
) -> dict[str, Any]:
    model_reasons = [r for r in reasons if r.get("family") != "policy"]
    rules = [r for r in reasons if r.get("family") == "policy"]
    view = service.sources_view(sources, datetime.now(UTC).date())
    return {
        "chart": charts.reason_chart(model_reasons, lang),
        "rules": rules,
        "model_reasons": model_reasons,
        "sources": view,
        "missing_sources": [s for s in view if not s["usable"]],
    }


@router.get("/score")
async def score_page(console: Scorer) -> Response:
    """The score form."""
    return console.page("score.html", _score_context({}, None, console.lang))


@router.post("/score")
async def score_submit(console: WriterPost, state: State, sessions: Sessions) -> Response:
    """Score through the API's own service function and show the decision."""
    started: float = console.request.scope.get("b2b.started", time.monotonic())
    form = console.form
    key = form.get("idempotency_key", "")
    outcome = await service.score(
        dict(form),
        principal=console.principal,
        state=state,
        sessions=sessions,
        idempotency_key=key if key and len(key) <= 128 and key.isprintable() else None,
        started=started,
    )
    context = _score_context(form, outcome, console.lang)
    if outcome.answer is not None:
        context["form"] = {"siren": "", "amount": ""}
    return console.page("score.html", context)


# --- decisions --------------------------------------------------------------------------


@router.get("/decisions")
async def decisions_page(console: Reader, db: DbSession) -> Response:
    """The tenant's decisions in this mode, filtered, newest first, keyset-paginated."""
    params = dict(console.request.query_params)
    filters = service.parse_filters(params)
    before_raw = params.get("before", "")
    before = int(before_raw) if before_raw.isdigit() and len(before_raw) < 19 else None
    page = await service.list_decisions(db, console.principal, filters, before)
    next_url = (
        f"/console/decisions?{urlencode(filters.query(before=str(page.next_before)))}"
        if page.next_before
        else None
    )
    first_url = f"/console/decisions?{urlencode(filters.query())}" if before else None
    return console.page(
        "decisions.html",
        {
            "filters": filters,
            "rows": page.rows,
            "next_url": next_url,
            "first_url": first_url,
            "decision_choices": service.DECISIONS,
            "grade_choices": service.GRADES,
        },
    )


def _feature_rows(features: Mapping[str, Any], lang: i18n.Lang) -> list[dict[str, Any]]:
    rows = []
    for name, value in features.items():
        spec = SPECS_BY_NAME.get(name)
        family = FAMILY_LABELS.get(spec.family, ("", "")) if spec else ("", "")
        rows.append(
            {
                "name": name,
                "value": value,
                "unit": spec.unit if spec else "",
                "family": family[0] if lang == "fr" else family[1],
                "description": spec.description if spec else "",
            }
        )
    return rows


async def _decision_response(
    console: Console, db: Any, decision_id: str, replay: dict[str, Any] | None = None
) -> Response:
    decision = await service.get_decision(db, console.principal, decision_id)
    if decision is None:
        return console.message("not_found", 404)
    lang = console.lang
    context = {
        "d": decision,
        "chain": await service.check_chain_link(
            db, decision, console.request.app.state.b2b.chain_keys
        ),
        "result": _result_view(reasons=decision.reasons, sources=decision.sources, lang=lang),
        "request_json": json.dumps(decision.request, indent=2, sort_keys=True, ensure_ascii=False),
        "features": _feature_rows(decision.features, lang),
        "replay": replay,
    }
    return console.page("decision.html", context)


@router.get("/decisions/{decision_id}")
async def decision_page(decision_id: str, console: Reader, db: DbSession) -> Response:
    """Everything the decision's audit row holds, and the integrity of its chain link."""
    return await _decision_response(console, db, decision_id)


@router.post("/decisions/{decision_id}/replay")
async def replay_submit(
    decision_id: str, console: ReaderPost, state: State, db: DbSession
) -> Response:
    """Replay the decision with the code of POST /v1/decisions/{id}/replay."""
    decision = await service.get_decision(db, console.principal, decision_id)
    replay: dict[str, Any] | None = None
    if decision is not None:
        try:
            result = await service.replay(state, decision)
            replay = {
                "identical": result.identical,
                "differences": result.differences,
                "unavailable": None,
            }
        except service.ReplayUnavailable as error:
            replay = {"identical": False, "differences": [], "unavailable": str(error)}
    return await _decision_response(console, db, decision_id, replay)


# --- operations --------------------------------------------------------------------------


def _window(console: Console, allowed: Any, default: str) -> str:
    window = console.request.query_params.get("window", default)
    return window if window in allowed else default


@router.get("/operations")
async def operations_page(console: Reader, state: State, db: DbSession) -> Response:
    """Latency percentiles, outcomes and the score distribution of a window."""
    window = _window(console, service.WINDOWS, "24h")
    figures = await service.operations(db, console.principal, state, window)
    lang = console.lang
    t = i18n.translator(lang)
    budget = float(state.settings.deadline_ms)
    latency = charts.hbar_chart(
        [
            (name, name, value, f"{i18n.number(value, lang, 1)} ms")
            for name, value in (("p50", figures.p50), ("p95", figures.p95), ("p99", figures.p99))
        ],
        reference=budget,
        reference_label=f"{t('budget')} {budget:.0f} ms",
    )
    total = figures.total or 1
    outcomes = charts.hbar_chart(
        [
            (
                d,
                i18n.decision_word(d, lang),
                float(figures.outcomes[d]),
                f"{figures.outcomes[d]} ({i18n.percent(figures.outcomes[d] / total, lang, 0)})",
            )
            for d in service.DECISIONS
        ]
    )
    histogram = charts.score_histogram(
        figures.scores, approve_from=figures.approve_from, decline_below=figures.decline_below
    )
    return console.page(
        "operations.html",
        {
            "figures": figures,
            "windows": list(service.WINDOWS),
            "latency": latency,
            "outcomes": outcomes,
            "histogram": histogram,
            "max_rows": service.OPERATIONS_MAX_ROWS,
        },
    )


# --- models ------------------------------------------------------------------------------


def _psi_level(value: float | None, watch: float, act: float) -> str:
    if value is None:
        return "none"
    return "act" if value >= act else "watch" if value >= watch else "stable"


@router.get("/models")
async def models_page(console: Admin, state: State, db: DbSession) -> Response:
    """The registry's bundles and their roles, and the serving bundle's PSI; read-only."""
    # Registry and platform-wide drift are the platform's, not one tenant's: operators only.
    window = _window(console, service.MODEL_WINDOWS, "7d")
    view = await service.models(db, state, window)
    features = sorted(
        (view.drift.features.items() if view.drift else []),
        key=lambda item: -1.0 if item[1] is None else -item[1],
    )
    return console.page(
        "models.html",
        {
            "view": view,
            "window": window,
            "windows": list(service.MODEL_WINDOWS),
            "features": [
                (name, psi, _psi_level(psi, view.watch, view.act)) for name, psi in features
            ],
            "score_level": _psi_level(
                view.drift.score_psi if view.drift else None, view.watch, view.act
            ),
        },
    )


@router.get("/model")
async def tenant_model_page(console: Reader, state: State, db: DbSession) -> Response:
    """The models behind this tenant's decisions, and its own score drift, in its mode."""
    window = _window(console, service.MODEL_WINDOWS, "7d")
    view = await service.tenant_model(db, state, console.principal, window)
    lang = console.lang
    chart = charts.paired_chart(
        [
            (
                f"{b.low}–{b.high}",
                b.reference,
                b.yours,
                i18n.percent(b.reference, lang, 1),
                i18n.percent(b.yours, lang, 1),
            )
            for b in view.bins
        ]
    )
    score_psi = view.drift.score_psi if view.drift else None
    return console.page(
        "model.html",
        {
            "view": view,
            "window": window,
            "windows": list(service.MODEL_WINDOWS),
            "chart": chart,
            "score_level": _psi_level(score_psi, view.watch, view.act),
        },
    )


# --- webhooks ----------------------------------------------------------------------------


@router.get("/webhooks")
async def webhooks_page(console: Reader, db: DbSession) -> Response:
    """The tenant's webhook endpoints in this mode."""
    endpoints = await service.webhook_endpoints(db, console.principal)
    return console.page("webhooks.html", {"endpoints": endpoints})


async def _endpoint_response(
    console: Console, db: Any, endpoint_id: str, notice: str | None
) -> Response:
    endpoint = await service.webhook_endpoint(db, console.principal, endpoint_id)
    if endpoint is None:
        return console.message("not_found_generic", 404)
    rows = await service.webhook_deliveries(db, endpoint)
    context = {
        "endpoint": endpoint,
        "rows": rows,
        "notice": notice,
        "can_redeliver": console.principal.has_scope("score:write"),
    }
    return console.page("webhook.html", context)


@router.get("/webhooks/{endpoint_id}")
async def webhook_page(endpoint_id: str, console: Reader, db: DbSession) -> Response:
    """One endpoint and its recent deliveries, each with its last attempt."""
    return await _endpoint_response(console, db, endpoint_id, None)


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver")
async def redeliver_submit(
    endpoint_id: str, delivery_id: str, console: WriterPost, state: State, db: DbSession
) -> Response:
    """Send a delivery again through the webhooks service's redeliver (as the API does)."""
    endpoint = await service.webhook_endpoint(db, console.principal, endpoint_id)
    if endpoint is None or await webhooks.redeliver(db, state.jobs, endpoint, delivery_id) is None:
        return console.message("not_found_generic", 404)
    return await _endpoint_response(console, db, endpoint_id, "redelivery_queued")


# --- consents ----------------------------------------------------------------------------


async def _consents_response(console: Console, db: Any, notice: str | None) -> Response:
    context = {
        "consents": await service.consents(db, console.principal),
        "notice": notice,
        "can_revoke": console.principal.has_scope("score:write"),
    }
    return console.page("consents.html", context)


@router.get("/consents")
async def consents_page(console: Reader, db: DbSession) -> Response:
    """The tenant's open-banking consents in this mode, newest first."""
    return await _consents_response(console, db, None)


@router.post("/consents/{consent_id}/revoke")
async def revoke_consent_submit(
    consent_id: str, console: WriterPost, state: State, db: DbSession
) -> Response:
    """Revoke a consent through the consents service (tokens and bank data purged)."""
    if not await service.revoke_consent(db, state, console.principal, consent_id):
        return console.message("not_found_generic", 404)
    return await _consents_response(console, db, "consent_revoked_notice")


# --- monitoring --------------------------------------------------------------------------


@router.get("/monitoring")
async def monitoring_page(console: Reader, db: DbSession) -> Response:
    """The tenant's monitored companies in this mode, their last check and newest alerts."""
    rows = await service.monitored(db, console.principal)
    return console.page("monitoring.html", {"rows": rows, "alerts_listed": service.ALERTS_LISTED})


@router.get("/monitoring/{item_id}")
async def monitored_company_page(item_id: str, console: Reader, db: DbSession) -> Response:
    """One monitored company of this tenant and mode, and its alerts, newest first."""
    item = await service.monitored_company(db, console.principal, item_id)
    if item is None:
        return console.message("not_found_generic", 404)
    return console.page("monitored.html", {"item": item, "alerts_shown": service.ALERTS_SHOWN})
