"""POST /v1/score: validate, authenticate, limit, then hand over to the service."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.routing import APIRoute

from b2bscore.kit.deps import Sessions, State
from b2bscore.kit.problems import Problem
from b2bscore.model.serving import CanaryStats
from b2bscore.scoring import service
from b2bscore.scoring.schemas import ScoreRequest, ScoreResponse
from b2bscore.tenants.auth import Principal, require_scope

router = APIRouter(prefix="/v1", tags=["scoring"])

ScoreWriter = Annotated[Principal, Depends(require_scope("score:write", rate_limited=True))]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses={
        401: _PROBLEM,
        403: _PROBLEM,
        409: _PROBLEM,
        413: _PROBLEM,
        415: _PROBLEM,
        422: _PROBLEM,
        429: _PROBLEM,
        503: _PROBLEM,
    },
    summary="Score a company and decide on a credit request",
)
async def score_company(
    request: Request,
    body: ScoreRequest,
    principal: ScoreWriter,
    sessions: Sessions,
    state: State,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)
    ] = None,
) -> ScoreResponse:
    """An instant decision with reasons, recorded before it is answered."""
    started: float = request.scope.get("b2b.started", time.monotonic())
    clients = state.sandbox_clients if principal.mode == "test" else state.live_clients
    if clients is None and not principal.allow_partial_data:
        # Every source would be `unavailable`: a decision made on nothing is no decision.
        raise Problem(
            503,
            "providers_not_configured",
            "No providers configured for this mode",
            f"No {principal.mode} data provider is configured, so no decision can be made. "
            "An operator configures them, or allows this tenant to score on partial data "
            "(b2bscore keys set-partial-data --tenant T --allow).",
            headers={"Retry-After": "60"},
        )
    if idempotency_key is not None and not idempotency_key.isprintable():
        raise Problem(
            422,
            "validation_error",
            "Invalid Idempotency-Key",
            errors=[{"field": "Idempotency-Key", "message": "must be printable"}],
        )
    # One read of the serving snapshot: this request keeps its bundle to the end, whatever
    # a promotion swaps meanwhile.
    serving = state.serving
    bundle = serving.for_request(body.siren, principal.tenant_id) if serving else state.bundle
    scoring = service.score_request(
        body,
        principal=principal,
        tools=service.ScoringTools.of(state, principal.mode, bundle=bundle, sessions=sessions),
        idempotency_key=idempotency_key,
        started=started,
    )
    if serving is None or bundle is serving.live:
        return await scoring
    return await _on_canary(scoring, serving.canary_stats)


async def _on_canary(
    scoring: Coroutine[Any, Any, ScoreResponse], stats: CanaryStats
) -> ScoreResponse:
    """Count the canary's requests and failures for its guard (a Problem is no failure)."""
    stats.requests += 1
    try:
        return await scoring
    except Problem:
        raise
    except Exception:
        stats.errors += 1
        raise


# POST /score: the path lenders were first given. It is the current version's endpoint
# (today v1) under an unversioned path: same handler, same contract, same OpenAPI schema.
current_router = APIRouter(tags=["scoring"])
_V1_SCORE = next(r for r in router.routes if isinstance(r, APIRoute) and r.name == "score_company")
current_router.add_api_route(
    "/score",
    _V1_SCORE.endpoint,
    methods=["POST"],
    response_model=_V1_SCORE.response_model,
    responses=_V1_SCORE.responses,
    summary="Score a company (the current version: POST /v1/score)",
    description="Answers exactly as `POST /v1/score`, the current version of the API.",
    operation_id="score_company_current",
)

# The paths that make a decision inside the budget: admission (kit/admission.py) lets a
# few run at once per process and queues the others before their budget starts.
DECISION_PATHS = ("/v1/score", "/score")
