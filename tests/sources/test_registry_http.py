"""Sirene and BODACC over real HTTP: the API key, the quota, 429 Retry-After, BODACC paging."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from b2bscore.kit.cache import Cache, create_cache, fixed_window
from b2bscore.kit.settings import Settings
from b2bscore.sources import bodacc, registry, sirene
from b2bscore.sources.clients import ProviderClients
from b2bscore.sources.errors import SourceUpstreamError
from tests.servers import serve_in_thread
from tests.sources import payloads

KEY = "insee-integration-key-" + "x" * 8
RETRY_SOON = "100000021"  # 429 with Retry-After: 0.2 once, then 200
RETRY_LATE = "100000039"  # 429 with Retry-After: 5, always
PAGED = "100000047"  # 250 BODACC notices, one malformed
N_NOTICES = 250


def _notices() -> list[dict[str, Any]]:
    out = []
    for i in range(N_NOTICES):  # newest first: i days before 2026-01-01
        day = time.strftime("%Y-%m-%d", time.gmtime(1767225600 - i * 86400))
        out.append({"familleavis": "modification", "dateparution": day, "jugement": None})
    out[150] = {"familleavis": "modification"}  # no dateparution
    out[-1] = {
        "familleavis": "collective",
        "dateparution": out[-2]["dateparution"],
        "jugement": '{"nature": "Jugement d\'ouverture de liquidation judiciaire"}',
    }
    return out


def _app() -> FastAPI:
    app = FastAPI()
    seen: list[str | None] = []
    calls: Counter[str] = Counter()
    params: list[dict[str, str]] = []
    app.state.seen, app.state.calls, app.state.params = seen, calls, params
    notices = _notices()

    @app.get("/siren/{siren}")
    async def unit(siren: str, request: Request) -> Response:
        seen.append(request.headers.get("X-INSEE-Api-Key-Integration"))
        calls[siren] += 1
        if (siren == RETRY_SOON and calls[siren] == 1) or siren == RETRY_LATE:
            delay = "0.2" if siren == RETRY_SOON else "5"
            return JSONResponse({"fault": "quota"}, status_code=429, headers={"Retry-After": delay})
        return JSONResponse(payloads.sirene(siren))

    @app.get("/catalog/datasets/annonces-commerciales/records")
    async def records(request: Request) -> Response:
        query = dict(request.query_params)
        params.append(query)
        limit, offset = int(query["limit"]), int(query["offset"])
        if limit > 100:  # the real API refuses it
            return JSONResponse({"error_code": "InvalidRESTParameterError"}, status_code=400)
        if query["refine"] != f"registre:{PAGED}":
            return JSONResponse({"total_count": 0, "results": []})
        return JSONResponse({"total_count": N_NOTICES, "results": notices[offset : offset + limit]})

    return app


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[FastAPI, str]]:
    """A Sirene and BODACC stand-in over real HTTP."""
    app = _app()
    with serve_in_thread(app) as url:
        yield app, url


@pytest.fixture
async def live(provider: tuple[FastAPI, str]) -> AsyncIterator[ProviderClients]:
    """Live clients configured from settings, with the INSEE key."""
    _, url = provider
    settings = Settings(live_registry_url=url, live_bodacc_url=url, sirene_api_key=KEY)
    clients = ProviderClients.live(settings)
    assert clients is not None
    yield clients
    await clients.aclose()


@pytest.fixture
async def shared_cache(redis_url: str) -> AsyncIterator[Cache]:
    """The real Redis, as every worker sees it."""
    cache = create_cache(redis_url)
    yield cache
    await cache.close()


async def test_the_api_key_header_from_settings_never_logged(
    live: ProviderClients, provider: tuple[FastAPI, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = provider
    assert live.sirene is not None
    assert live.sirene_per_minute == 30  # the public plan, from settings
    caplog.set_level(logging.DEBUG)
    raw = await registry.fetch_registry(live.sirene, live.bodacc, "111111118")
    assert raw["sirene"]["uniteLegale"]["siren"] == "111111118"
    assert app.state.seen[-1] == KEY
    assert KEY not in caplog.text
    assert KEY not in repr(Settings(sirene_api_key=KEY))


async def test_429_retry_after_inside_the_budget_and_not_beyond(live: ProviderClients) -> None:
    assert live.sirene is not None
    started = time.monotonic()
    body = await sirene.fetch_sirene(live.sirene, RETRY_SOON, deadline=started + 2)
    assert body["uniteLegale"]["siren"] == RETRY_SOON
    assert 0.2 <= time.monotonic() - started < 1.5
    started = time.monotonic()
    with pytest.raises(SourceUpstreamError, match="sirene: http 429") as caught:
        await sirene.fetch_sirene(live.sirene, RETRY_LATE, deadline=started + 0.5)
    assert caught.value.retry_after == 5.0
    assert time.monotonic() - started < 0.5  # no wait that could not end in time


async def test_the_quota_is_shared_across_workers(shared_cache: Cache) -> None:
    key = f"quota:sirene:test:{secrets.token_hex(4)}"
    if fixed_window(key, sirene.QUOTA_WINDOW_SECONDS)[1] < 5:
        await asyncio.sleep(5)  # not across a window boundary
    worker_a = sirene.SireneQuota(shared_cache, per_minute=3, key=key)
    worker_b = sirene.SireneQuota(shared_cache, per_minute=3, key=key)
    await worker_a.acquire(None)
    await worker_b.acquire(None)
    await worker_a.acquire(None)
    started = time.monotonic()
    with pytest.raises(SourceUpstreamError, match="quota exhausted"):
        await worker_b.acquire(started + 0.3)  # the next window is too far for the budget
    assert time.monotonic() - started < 0.3


async def test_bodacc_is_ordered_and_paged_past_100(
    live: ProviderClients, provider: tuple[FastAPI, str]
) -> None:
    app, _ = provider
    app.state.params.clear()
    answer = await bodacc.fetch_bodacc(live.bodacc, PAGED)
    assert answer is not None
    assert len(answer["results"]) == N_NOTICES
    asked = sorted(int(p["offset"]) for p in app.state.params)
    assert asked == [0, 100, 200]
    assert {p["order_by"] for p in app.state.params} == {"dateparution desc"}
    assert {p["limit"] for p in app.state.params} == {"100"}
    notices = bodacc.parse_records(answer)
    assert (len(notices.announcements), notices.dropped) == (N_NOTICES - 1, 1)
    # The oldest notice, on the third page, is the only proceedings: it is still seen.
    assert bodacc.lifecycle(notices.announcements).ongoing


async def test_bodacc_down_leaves_the_registry_usable(live: ProviderClients) -> None:
    assert live.sirene is not None
    broken = ProviderClients.sandbox("http://127.0.0.1:9", Settings())
    try:
        raw = await registry.fetch_registry(live.sirene, broken.bodacc, "111111118")
    finally:
        await broken.aclose()
    data = registry.parse_raw(raw, date(2026, 1, 31))
    assert data.note == "bodacc unavailable: no announcements"
    assert data.siren == "111111118"
