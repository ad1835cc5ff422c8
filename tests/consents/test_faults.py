"""Bad input and faults of the flow: forged and replayed state, codes, a failing bank."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.consents.service import sync_consent
from b2bscore.consents.tasks import sync_tools
from b2bscore.kit.state import AppState
from b2bscore.tenants.models import utcnow
from tests.consents.conftest import LENDER, Keys, ask, bearer, parse_form
from tests.consents.test_flow import consent_row


async def bank_redirect(browser: httpx.AsyncClient, authorization_url: str) -> str:
    """Accept everything at the bank; the callback URL it redirects to (not followed)."""
    page = await browser.get(authorization_url)
    form = parse_form(page.text)
    data: dict[str, str | list[str]] = dict(form.hidden)
    data["accounts"] = [v for n, v in form.boxes if n == "accounts"]
    data["scopes"] = [v for n, v in form.boxes if n == "scopes"]
    data["action"] = "accept"
    base = re.match(r"^https?://[^/]+", authorization_url)
    assert base is not None
    r = await browser.post(base.group(0) + form.action, data=data)
    assert r.status_code == 303
    return r.headers["location"]


@pytest.fixture
async def token_outage(
    browser: httpx.AsyncClient, sandbox_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Lets a test make the banks' token endpoints fail; always switched back on."""
    yield browser
    await browser.put(f"{sandbox_url}/oauth/_admin/token-fault?fault=")


class TestCallbackFaults:
    """GET /v1/consents/callback under attack and under failure."""

    async def test_forged_state_is_a_400(self, browser: httpx.AsyncClient) -> None:
        r = await browser.get("/v1/consents/callback?state=forged&code=whatever")
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_state"

    async def test_replayed_state_is_refused_and_the_consent_stays_active(
        self, browser: httpx.AsyncClient, keys: Keys
    ) -> None:
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        first = await browser.get(callback)
        assert first.status_code == 303
        assert first.headers["location"].startswith(LENDER)
        again = await browser.get(callback)
        assert again.status_code == 400
        assert again.json()["code"] == "invalid_state"
        got = await browser.get(f"/v1/consents/{created['id']}", headers=bearer(keys.writer))
        assert got.json()["status"] == "active"

    async def test_a_code_used_twice_makes_the_bank_revoke_and_the_sync_expires_the_consent(
        self,
        browser: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        sandbox_url: str,
        pg_engine: AsyncEngine,
    ) -> None:
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        code = parse_qs(urlsplit(callback).query)["code"][0]
        assert (await browser.get(callback)).status_code == 303
        # Someone who intercepted the code tries it again at the bank: refused, and
        # (RFC 6749 4.1.2) what the code gave is revoked.
        reuse = await browser.post(
            f"{sandbox_url}/oauth/sandbox-stet14/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": "b2bscore"},
        )
        assert reuse.status_code == 400
        assert reuse.json()["error"] == "invalid_grant"
        async with httpx.AsyncClient() as http:
            outcome = await sync_consent(sync_tools(state, http), created["id"], utcnow())
        assert outcome == "revoked_by_bank"
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "expired"
        assert row.tokens_ciphertext is None
        assert row.snapshot_ciphertext is None

    @pytest.mark.parametrize(
        ("fault", "status", "code"),
        [
            ("error", 502, "bank_token_error"),
            ("timeout", 504, "bank_token_timeout"),
        ],
    )
    async def test_failing_token_endpoint_is_a_clear_problem(
        self,
        token_outage: httpx.AsyncClient,
        keys: Keys,
        sandbox_url: str,
        pg_engine: AsyncEngine,
        fault: str,
        status: int,
        code: str,
    ) -> None:
        browser = token_outage
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        await browser.put(f"{sandbox_url}/oauth/_admin/token-fault?fault={fault}")
        r = await browser.get(callback)
        assert r.status_code == status
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == code
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "refused"
        assert row.tokens_ciphertext is None

    async def test_expired_state(
        self, browser: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        async with pg_engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE consents SET state_expires_at = now() - interval '1 second' "
                    "WHERE id = :id"
                ),
                {"id": created["id"]},
            )
        r = await browser.get(callback)
        assert r.status_code == 400
        assert r.json()["code"] == "state_expired"


class TestBankRefusesAtItsSide:
    """A bank that revokes the consent itself (401 during a sync)."""

    async def test_revoked_at_the_bank_expires_and_purges(
        self,
        browser: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        sandbox_url: str,
        pg_engine: AsyncEngine,
    ) -> None:
        created = await ask(browser, keys.writer, siren="732829320")
        assert (
            await browser.get(await bank_redirect(browser, created["authorization_url"]))
        ).status_code == 303
        async with httpx.AsyncClient() as http:
            tools = sync_tools(state, http)
            assert await sync_consent(tools, created["id"], utcnow()) == "synced"
            assert (await consent_row(pg_engine, created["id"])).snapshot_ciphertext is not None
            await http.post(f"{sandbox_url}/oauth/_admin/revoke-all?siren=732829320")
            assert await sync_consent(tools, created["id"], utcnow()) == "revoked_by_bank"
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "expired"
        assert row.snapshot_ciphertext is None
        assert row.tokens_ciphertext is None
