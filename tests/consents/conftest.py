"""The API on real PostgreSQL and Redis, the sandbox banks over real HTTP, a lender page."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import build_state, close_state, create_app
from b2bscore.consents.service import allow_redirect
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.settings import Settings
from b2bscore.kit.state import AppState
from b2bscore.tenants import service as tenants
from b2bscore.tenants.models import utcnow

REPO = Path(__file__).resolve().parents[2]
API = "http://api.test"
LENDER = "http://lender.test/consent-done"
NO_CONSENT = "123456782"  # the world's no-consent scenario


@dataclass(frozen=True)
class Keys:
    """Keys of two tenants."""

    writer: str  # tenant A, test, score:write + decisions:read
    reader_only: str  # tenant A, test, decisions:read
    no_read: str  # tenant A, test, score:write only
    other_tenant: str  # tenant B, test, all
    live: str  # tenant A, live


@pytest.fixture(scope="module")
async def keys(pg_engine: AsyncEngine) -> Keys:
    """Keys and allow-lists committed once for the module."""
    async with create_sessionmaker(pg_engine)() as session:
        a = await tenants.create_tenant(session, f"consents-a-{os.urandom(3).hex()}")
        b = await tenants.create_tenant(session, f"consents-b-{os.urandom(3).hex()}")
        both = ["score:write", "decisions:read"]
        _, writer = await tenants.create_api_key(session, a, "test", both)
        _, reader = await tenants.create_api_key(session, a, "test", ["decisions:read"])
        _, no_read = await tenants.create_api_key(session, a, "test", ["score:write"])
        _, other = await tenants.create_api_key(session, b, "test", both)
        _, live = await tenants.create_api_key(session, a, "live", both)
        for tenant in (a, b):
            await allow_redirect(session, tenant.id, "test", LENDER, utcnow())
        await allow_redirect(session, a.id, "live", "https://lender.example/done", utcnow())
        await session.commit()
    return Keys(writer, reader, no_read, other, live)


def lender_app() -> FastAPI:
    """The lender's page the company's user comes back to."""
    app = FastAPI()

    @app.get("/consent-done")
    async def done(request: Request) -> dict[str, Any]:
        return dict(request.query_params)

    return app


@pytest.fixture(scope="module")
async def app_state(
    postgres_url: str, redis_url: str, sandbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[FastAPI, AppState]]:
    """The API (its job engine on PostgreSQL: workers run where the test says)."""
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        sandbox_url=sandbox_url,
        var_dir=tmp_path_factory.mktemp("var"),
        models_dir=Path(os.environ.get("B2BSCORE_TEST_MODELS_DIR", REPO / "models")),
        rate_limit_per_minute=100_000,
        consent_callback_url=f"{API}/v1/consents/callback",
        consent_token_timeout_seconds=1.0,
    )
    app = create_app(settings)
    app.state.b2b = state = await build_state(settings)
    yield app, state
    await close_state(state)


@pytest.fixture
def state(app_state: tuple[FastAPI, AppState]) -> AppState:
    """The API's long-lived resources."""
    return app_state[1]


@pytest.fixture
async def browser(app_state: tuple[FastAPI, AppState]) -> AsyncIterator[httpx.AsyncClient]:
    """One client for the API, the lender's page and the sandbox bank (real HTTP)."""
    mounts = {
        "all://api.test": httpx.ASGITransport(app=app_state[0]),
        "all://lender.test": httpx.ASGITransport(app=lender_app()),
    }
    async with httpx.AsyncClient(mounts=mounts, base_url=API, timeout=10) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    """Authorization header for key."""
    return {"Authorization": f"Bearer {key}"}


class ConsentForm(HTMLParser):
    """The form of a bank's consent page: action, hidden fields, checkboxes, buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.hidden: dict[str, str] = {}
        self.boxes: list[tuple[str, str]] = []
        self.buttons: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect what a browser would submit."""
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a["action"]
        elif tag == "input" and a.get("type") == "hidden":
            self.hidden[a["name"]] = a["value"]
        elif tag == "input" and a.get("type") == "checkbox":
            self.boxes.append((a["name"], a["value"]))
        elif tag == "button":
            self.buttons.append((a["name"], a["value"]))


def parse_form(page: str) -> ConsentForm:
    """The consent form of a page."""
    form = ConsentForm()
    form.feed(page)
    return form


async def ask(
    browser: httpx.AsyncClient,
    key: str,
    siren: str = NO_CONSENT,
    bank: str = "sandbox-stet14",
    scopes: tuple[str, ...] = ("balances", "transactions"),
) -> dict[str, Any]:
    """POST /v1/consents; the created consent."""
    r = await browser.post(
        "/v1/consents",
        json={"siren": siren, "bank": bank, "scopes": list(scopes), "redirect_uri": LENDER},
        headers=bearer(key),
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def answer_at_bank(
    browser: httpx.AsyncClient,
    authorization_url: str,
    *,
    action: str = "accept",
    accounts: int | None = None,
    scopes: tuple[str, ...] | None = None,
) -> httpx.Response:
    """Open the bank's page, tick boxes, press a button; follow redirects to the lender."""
    page = await browser.get(authorization_url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    form = parse_form(page.text)
    data: dict[str, str | list[str]] = dict(form.hidden)
    account_boxes = [value for name, value in form.boxes if name == "accounts"]
    data["accounts"] = account_boxes[: accounts if accounts is not None else len(account_boxes)]
    data["scopes"] = [
        value
        for name, value in form.boxes
        if name == "scopes" and (scopes is None or value in scopes)
    ]
    data["action"] = action
    base = re.match(r"^https?://[^/]+", authorization_url)
    assert base is not None
    return await browser.post(base.group(0) + form.action, data=data, follow_redirects=True)
