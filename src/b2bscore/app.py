"""create_app(settings): the FastAPI application and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from b2bscore.books.endpoints import BOOKS_PATH
from b2bscore.books.endpoints import router as books_router
from b2bscore.consents.endpoints import router as consents_router
from b2bscore.console.endpoints import router as console_router
from b2bscore.decisions.chainkeys import ChainKeyring
from b2bscore.decisions.checkpoints import CheckpointPublisher, CheckpointSigner, CheckpointStore
from b2bscore.decisions.crypto import DataKeyring, KeyringError
from b2bscore.decisions.endpoints import router as decisions_router
from b2bscore.decisions.writer import AuditWriter
from b2bscore.kit.admission import AdmissionMiddleware
from b2bscore.kit.cache import FallbackCache, create_cache
from b2bscore.kit.db import create_engine, create_sessionmaker
from b2bscore.kit.deadline import StoreUnavailable, store_unavailable_problem, within
from b2bscore.kit.deps import State
from b2bscore.kit.jobs import Jobs
from b2bscore.kit.logging import throttle
from b2bscore.kit.metrics import REQUEST_LATENCY, render_metrics
from b2bscore.kit.problems import Problem, install_problem_handlers, problem_response
from b2bscore.kit.settings import Settings, get_settings
from b2bscore.kit.state import AppState
from b2bscore.model import tasks as model_tasks
from b2bscore.model.bundle import latest_bundle_path, load_bundle
from b2bscore.model.serving import ServingModels
from b2bscore.outcomes.endpoints import router as outcomes_router
from b2bscore.portfolio.endpoints import BATCHES_PATH
from b2bscore.portfolio.endpoints import router as portfolio_router
from b2bscore.scoring.endpoints import DECISION_PATHS
from b2bscore.scoring.endpoints import current_router as current_scoring_router
from b2bscore.scoring.endpoints import router as scoring_router
from b2bscore.sources.clients import ProviderClients
from b2bscore.sources.tokens import Tokenizer
from b2bscore.webhooks.endpoints import router as webhooks_router
from b2bscore.webhooks.schemas import document_webhooks

log = logging.getLogger(__name__)

# Each readiness probe (database, cache) gets this long; /readyz answers within a second.
READY_PROBE_SECONDS = 0.8


class GuardMiddleware:
    """Times requests, caps body size and insists on JSON for writes, before any parsing.

    Pure ASGI (no BaseHTTPMiddleware) so that it costs microseconds on the hot path.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        uploads: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Paths whose body is a file (any media type: the endpoint checks its own) under
        # their own size limit: the lender's books, batch files.
        self.uploads = tuple(uploads)

    def _upload_limit(self, path: str) -> int | None:
        for pattern, limit in self.uploads:
            if pattern.fullmatch(path):
                return limit
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        scope["b2b.started"] = started
        status_holder = {"status": 500}
        path = scope.get("path", "")

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        upload_limit = self._upload_limit(path)
        limit = self.max_body_bytes if upload_limit is None else upload_limit
        try:
            problem = self._reject(scope, limit, json_only=upload_limit is None)
            if problem is not None:
                await problem_response(problem, path)(scope, receive, send_with_status)
                return
            await self.app(scope, self._limited(receive, limit), send_with_status)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            REQUEST_LATENCY.labels(
                route_path, scope.get("method", ""), str(status_holder["status"])
            ).observe(time.monotonic() - started)

    def _reject(self, scope: Scope, limit: int, *, json_only: bool) -> Problem | None:
        if scope.get("method") not in {"POST", "PUT", "PATCH"}:
            return None
        headers = dict(scope.get("headers", ()))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_large = int(length) > limit
            except ValueError:
                return Problem(400, "bad_request", "Invalid Content-Length")
            if too_large:
                return Problem(
                    413,
                    "payload_too_large",
                    "Request body too large",
                    f"The body may not exceed {limit} bytes.",
                )
        if not json_only or (length in (None, b"0") and b"transfer-encoding" not in headers):
            return None  # no body (e.g. a replay): nothing to parse, so no type to insist on
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            if content_type == b"application/x-www-form-urlencoded" and str(
                scope.get("path", "")
            ).startswith("/console/"):
                return None  # the console's HTML forms; looked at only off the JSON path
            return Problem(
                415,
                "unsupported_media_type",
                "Unsupported media type",
                "Send the body as application/json.",
                errors=[{"field": "Content-Type", "message": "must be application/json"}],
            )
        return None

    def _limited(self, receive: Receive, limit: int) -> Receive:
        # Chunked bodies carry no Content-Length: count what actually arrives.
        received = 0

        async def wrapped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        return wrapped


class _BodyTooLarge(StarletteHTTPException):
    # An HTTPException so that FastAPI's body parsing passes it through untouched.
    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


class StartupRefused(Exception):
    """The service must not start as configured (production mode without its keys)."""


@dataclass(frozen=True, slots=True)
class Secrets:
    """The keys a serving process needs: payloads, tokens, chain links, checkpoints."""

    keyring: DataKeyring
    tokenizer: Tokenizer
    chain_keys: ChainKeyring
    checkpoint_signer: CheckpointSigner


def load_secrets(settings: Settings) -> Secrets:
    """Every key the service needs; StartupRefused saying what is missing."""
    try:
        return Secrets(
            keyring=DataKeyring.from_settings(settings),
            tokenizer=Tokenizer.from_settings(settings),
            chain_keys=ChainKeyring.from_settings(settings),
            checkpoint_signer=CheckpointSigner.from_settings(settings),
        )
    except (KeyringError, ValueError) as error:
        raise StartupRefused(str(error)) from None


async def build_state(settings: Settings) -> AppState:
    """Open pools, clients and the model bundle for the lifetime of the app."""
    # First: in production, no keys means no start (nothing opened to close again).
    secrets = load_secrets(settings)
    keyring = secrets.keyring
    engine = create_engine(settings.resolved_database_url, pool_size=settings.db_pool_size)
    models_dir = settings.models_dir
    bundle_path = (
        models_dir / settings.model_id if settings.model_id else latest_bundle_path(models_dir)
    )
    bundle = load_bundle(bundle_path)
    log.info("model %s %s loaded from %s", bundle.model_id, bundle.version, bundle_path)
    sessionmaker = create_sessionmaker(engine)
    jobs = Jobs(settings)
    await jobs.open()
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        cache=create_cache(settings.redis_url),
        bundle=bundle,
        keyring=keyring,
        audit=AuditWriter(sessionmaker, keyring, secrets.chain_keys),
        tokenizer=secrets.tokenizer,
        sandbox_clients=ProviderClients.sandbox(settings.sandbox_url, settings)
        if settings.sandbox_url
        else None,
        live_clients=ProviderClients.live(settings),
        bundles={bundle.model_id: bundle},
        jobs=jobs,
        chain_keys=secrets.chain_keys,
        checkpoints=CheckpointPublisher(
            sessionmaker,
            secrets.checkpoint_signer,
            CheckpointStore.at(settings.resolved_checkpoint_path),
            settings.audit_checkpoint_interval_seconds,
        ),
        serving=ServingModels(live=bundle),
    )


async def close_state(state: AppState) -> None:
    """Release what build_state opened."""
    for clients in (state.sandbox_clients, state.live_clients):
        if clients is not None:
            await clients.aclose()
    await state.checkpoints.close()
    await state.audit.close()
    if state.jobs is not None:
        await state.jobs.close()
    await state.cache.close()
    await state.engine.dispose()


def _install_store_outage_handler(app: FastAPI) -> None:
    """A database that cannot be reached is an outage (503), not a bug (500)."""

    async def _store_unavailable(request: Request, exc: Exception) -> Response:
        # Once per interval and kind, with a count: an outage meets every request.
        throttle.log(
            log,
            logging.WARNING,
            f"store_unavailable:{type(exc).__name__}",
            "store unavailable: %s",
            exc if isinstance(exc, StoreUnavailable) else type(exc).__name__,
        )
        return problem_response(store_unavailable_problem(), request.url.path)

    for error in (
        StoreUnavailable,
        DBAPIError,
        SQLAlchemyTimeoutError,
        ConnectionError,
        TimeoutError,
    ):
        app.add_exception_handler(error, _store_unavailable)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The b2bscore API."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.b2b = state = await build_state(settings)
        # Off the request path: a background task of each worker (see CheckpointPublisher).
        state.checkpoints.start()
        # Embedded default: this process runs the background work itself (kit/jobs.py).
        worker: asyncio.Task[None] | None = None
        if state.jobs is not None and state.jobs.runs_in_process:
            worker = asyncio.create_task(state.jobs.run_worker(state, name="in-process"))
            if settings.sandbox_consents:
                # The in-memory queue starts empty: first syncs of the sandbox's standing
                # consents (consents/sandbox.py) and of any consent a restart left unsynced.
                await state.jobs.defer("consents.catch_up", queueing_lock="consents.catch_up")
        models = await model_tasks.start(state)
        # Everything loaded so far (modules, the model, pools) lives as long as the
        # process: moved out of the collector's reach, a full collection no longer walks
        # it, which takes tens of milliseconds off the pauses that hit the latency tail.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await model_tasks.stop(models)
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            await close_state(app.state.b2b)

    app = FastAPI(
        title="b2bscore",
        version="0.1.0",
        summary="Instant, explainable credit decisions on French companies.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    _install_store_outage_handler(app)
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        uploads=(
            (BOOKS_PATH, settings.books_max_bytes),
            (BATCHES_PATH, settings.batch_max_bytes),
        ),
    )
    # Outermost: a request waiting for its turn has not started its budget yet.
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.resolved_max_concurrent_decisions,
        max_wait_seconds=settings.admission_wait_ms / 1000,
        paths=DECISION_PATHS,
    )
    app.include_router(scoring_router)
    app.include_router(current_scoring_router)
    app.include_router(decisions_router)
    app.include_router(books_router)
    app.include_router(console_router)
    app.include_router(webhooks_router)
    app.include_router(portfolio_router)
    app.include_router(consents_router)
    document_webhooks(app)
    app.include_router(outcomes_router)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: model, database, cache")
    async def readyz(state: State) -> Response:
        checks: dict[str, Any] = {"model": f"{state.bundle.model_id} {state.bundle.version}"}
        ready = True

        async def select_one() -> None:
            async with state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        # Both probes at once, each cut at READY_PROBE_SECONDS: /readyz answers within a
        # second whatever the stores do (a frozen database never refuses, it only waits).
        deadline = time.monotonic() + READY_PROBE_SECONDS
        database, cache = await asyncio.gather(
            within(deadline, select_one(), store="database"),
            within(deadline, state.cache.ping(), store="cache"),
            return_exceptions=True,
        )
        if isinstance(database, BaseException):
            checks["database"] = f"unavailable: {type(database).__name__}"
            ready = False
        else:
            checks["database"] = "ok"
        if isinstance(state.cache, FallbackCache):
            checks["cache"] = "ok" if cache is True else "degraded: in-process fallback"
        else:
            checks["cache"] = "in-process"
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics(state: State) -> Response:
        if state.jobs is not None:
            # The queue depth is read at scrape time; a slow database leaves it stale.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await state.jobs.queue_depth()
        payload, content_type = render_metrics()
        return Response(payload, media_type=content_type)

    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn workers: settings from the environment."""
    from b2bscore.kit.logging import configure_logging

    configure_logging()
    return create_app(get_settings())
