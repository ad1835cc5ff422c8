"""The service with its console on the session's PostgreSQL, real Redis and the sandbox."""

from __future__ import annotations

import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import build_state, close_state, create_app
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.settings import Settings
from b2bscore.portfolio.models import MonitoredCompany
from b2bscore.tenants import service as tenants
from b2bscore.webhooks import service as webhooks
from tests.decisions.factories import make_record
from tests.servers import serve_in_thread

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ConsoleKeys:
    """Keys of two fresh tenants (their decisions are theirs alone in the shared database)."""

    tenant_id: str
    tenant_name: str
    writer: str  # test mode, score:write + decisions:read
    writer_id: str
    reader_only: str  # test mode, decisions:read
    live: str  # live mode, score:write + decisions:read
    other_tenant: str  # another tenant, test mode, all scopes
    other_tenant_id: str


@pytest.fixture(scope="session")
async def console_keys(pg_engine: AsyncEngine) -> ConsoleKeys:
    """Fresh tenants and keys for the console tests."""
    async with create_sessionmaker(pg_engine)() as session:
        # A tenant name holding markup: every page must show it as text.
        name = f"<b>Acme</b> & Co {secrets.token_hex(3)}"
        a = await tenants.create_tenant(session, name)
        b = await tenants.create_tenant(session, f"console-other-{secrets.token_hex(3)}")
        writer_row, writer = await tenants.create_api_key(
            session, a, "test", ["score:write", "decisions:read"]
        )
        _, reader = await tenants.create_api_key(session, a, "test", ["decisions:read"])
        _, live = await tenants.create_api_key(
            session, a, "live", ["score:write", "decisions:read"]
        )
        _, other = await tenants.create_api_key(session, b, "test", ["admin"])
        await session.commit()
    return ConsoleKeys(a.id, name, writer, writer_row.id, reader, live, other, b.id)


@pytest.fixture(scope="session")
def console_settings(
    postgres_url: str, redis_url: str, sandbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings of the service under test."""
    return Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        sandbox_url=sandbox_url,
        var_dir=tmp_path_factory.mktemp("console-var"),
        models_dir=Path(os.environ.get("B2BSCORE_TEST_MODELS_DIR", REPO / "models")),
        rate_limit_per_minute=100_000,
        # These tests are about the pages: on a loaded CI machine a healthy company must
        # not turn into "review" because a source missed 500 ms. 666 666 664 still times
        # out (the sandbox hangs for 30 s).
        deadline_ms=2_500,
    )


@pytest.fixture(scope="module")
async def console_app(console_settings: Settings) -> AsyncIterator[FastAPI]:
    """The service in process, its providers over real HTTP."""
    app = create_app(console_settings)
    app.state.b2b = await build_state(console_settings)
    yield app
    await close_state(app.state.b2b)


@pytest.fixture
async def client(console_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of its own: its own cookie jar, no redirects followed."""
    transport = httpx.ASGITransport(app=console_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://console.test", timeout=30
    ) as http:
        yield http


@pytest.fixture(scope="module")
def console_url(console_settings: Settings) -> Iterator[str]:
    """The whole service served over real HTTP on loopback, its lifespan included."""
    with serve_in_thread(create_app(console_settings)) as url:
        yield url


_HIDDEN = re.compile(r'name="(?P<name>[a-z_]+)" value="(?P<value>[^"]*)"')


def hidden_fields(html: str) -> dict[str, str]:
    """The hidden inputs of a page (CSRF token, idempotency key, next)."""
    return {m["name"]: m["value"] for m in _HIDDEN.finditer(html)}


async def signed_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign client in with key (the session cookie lands in its jar); the CSRF token."""
    page = await client.get("/console/sign-in")
    form = {**hidden_fields(page.text), "api_key": key}
    answer = await client.post("/console/sign-in", data=form)
    assert answer.status_code == 303, answer.text[:500]
    page = await client.get("/console/decisions")
    return hidden_fields(page.text)["csrf_token"]


def fresh_siren() -> str:
    """A valid SIREN of this test alone (a sweep by SIREN sees every tenant's watch)."""
    from stdnum import luhn

    body = f"9{secrets.randbelow(10**7):07d}"
    return body + luhn.calc_check_digit(body)


@dataclass(frozen=True)
class Walled:
    """A fresh tenant with a watched company, alerts and decisions in both modes."""

    tenant_id: str
    test_key: str  # test mode, score:write + decisions:read
    live_key: str  # live mode, score:write + decisions:read
    score_only: str  # test mode, score:write alone
    siren: str
    test_item: str  # the company watched in test mode
    live_item: str  # the same company watched in live mode
    test_decisions: int
    live_decisions: int


TEST_ONLY: Final = "TEST-ONLY <script>alert(1)</script>"
LIVE_ONLY: Final = "LIVE-ONLY proceedings"
OTHER_TENANT: Final = "OTHER-TENANT proceedings"
TEST_SCORE: Final = 150
LIVE_SCORE: Final = 950


async def _watch(session: Any, tenant_id: str, key_id: str, mode: str, siren: str) -> str:
    row = MonitoredCompany(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        mode=mode,
        api_key_id=key_id,
        siren=siren,
        product="term_loan",
        requested_amount=Decimal("25000.00"),
        rules={},
        external_reference=f"{mode}-ref",
        created_at=datetime.now(UTC),
        last_checked_at=datetime.now(UTC),
        last_score=540,
        last_grade="C",
    )
    session.add(row)
    return row.id


async def _proceedings(
    session: Any, tenant_id: str, mode: str, siren: str, item: str, nature: str
) -> None:
    await webhooks.emit_event(
        session,
        tenant_id=tenant_id,
        mode=mode,
        event_type="company.proceedings_opened",
        ordering_key=siren,
        data={
            "monitored_company_id": item,
            "siren": siren,
            "external_reference": None,
            "announcement_id": f"2026-11-30|{nature}",
            "published_on": date(2026, 11, 30),
            "nature": nature,
        },
    )


@pytest.fixture
async def walled(pg_engine: AsyncEngine, console_app: FastAPI, console_keys: ConsoleKeys) -> Walled:
    """Test rows and live rows of one tenant, and another tenant's alert on the same SIREN."""
    siren = fresh_siren()
    async with create_sessionmaker(pg_engine)() as session:
        tenant = await tenants.create_tenant(session, f"walled-{secrets.token_hex(3)}")
        test_row, test_key = await tenants.create_api_key(
            session, tenant, "test", ["score:write", "decisions:read"]
        )
        live_row, live_key = await tenants.create_api_key(
            session, tenant, "live", ["score:write", "decisions:read"]
        )
        _, score_only = await tenants.create_api_key(session, tenant, "test", ["score:write"])
        test_item = await _watch(session, tenant.id, test_row.id, "test", siren)
        live_item = await _watch(session, tenant.id, live_row.id, "live", siren)
        await session.flush()
        await webhooks.emit_event(
            session,
            tenant_id=tenant.id,
            mode="test",
            event_type="company.score_changed",
            ordering_key=siren,
            data={
                "monitored_company_id": test_item,
                "siren": siren,
                "external_reference": None,
                "previous": {
                    "decision_id": None,
                    "score": 712,
                    "grade": "B",
                    "probability_of_default": 0.01,
                },
                "current": {
                    "decision_id": None,
                    "score": 540,
                    "grade": "C",
                    "probability_of_default": 0.04,
                    "decision": "review",
                },
                "triggers": ["grade_drop"],
                "reasons_moved": [],
            },
        )
        await _proceedings(session, tenant.id, "test", siren, test_item, TEST_ONLY)
        await _proceedings(session, tenant.id, "live", siren, live_item, LIVE_ONLY)
        other = console_keys.other_tenant_id
        await _proceedings(session, other, "test", siren, "elsewhere", OTHER_TENANT)
        await session.commit()
    serving = console_app.state.b2b.bundle
    for mode, score, count in (("test", TEST_SCORE, 2), ("live", LIVE_SCORE, 3)):
        for _ in range(count):
            await console_app.state.b2b.audit.record(
                make_record(
                    tenant.id,
                    mode=mode,
                    score=score,
                    model_id=serving.model_id,
                    model_version=serving.version,
                )
            )
    return Walled(tenant.id, test_key, live_key, score_only, siren, test_item, live_item, 2, 3)
