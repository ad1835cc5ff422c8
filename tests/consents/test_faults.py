"""Bad input and faults of the flow: forged and replayed state, codes, a failing bank."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.consents.service import exchange_code, exchange_lock, sweep, sync_consent
from b2bscore.consents.tasks import sync_tools
from b2bscore.kit.state import AppState
from b2bscore.tenants.models import utcnow
from tests.consents.conftest import LENDER, Keys, ask, bearer, parse_form
from tests.consents.test_flow import consent_row, run_sync_jobs
from tests.consents.test_lifecycle import actions


async def retry_jobs(engine: AsyncEngine, consent_id: str) -> list[str]:
    """Statuses of the consent's exchange jobs still in the queue."""
    async with engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT status FROM procrastinate_jobs WHERE lock = :lock "
                "AND status IN ('todo', 'doing')"
            ),
            {"lock": exchange_lock(consent_id)},
        )
        return [str(s) for s in found.scalars().all()]


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
        ("fault", "error"),
        [("error", "token endpoint: http 503"), ("timeout", "token endpoint: timeout")],
    )
    async def test_failing_token_endpoint_leaves_the_consent_pending_and_the_job_retries(
        self,
        token_outage: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        sandbox_url: str,
        pg_engine: AsyncEngine,
        fault: str,
        error: str,
    ) -> None:
        browser = token_outage
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        await browser.put(f"{sandbox_url}/oauth/_admin/token-fault?fault={fault}")
        r = await browser.get(callback)
        # The user did consent: back to the lender with the consent still pending.
        assert r.status_code == 303
        location = urlsplit(r.headers["location"])
        assert parse_qs(location.query) == {"consent_id": [created["id"]], "status": ["pending"]}
        got = await browser.get(f"/v1/consents/{created['id']}", headers=bearer(keys.writer))
        assert got.json()["status"] == "pending"
        assert got.json()["last_error"] == error
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "pending"
        assert row.tokens_ciphertext is not None  # the code and verifier, sealed
        assert row.state_hash is None  # the state is spent all the same
        assert await retry_jobs(pg_engine, created["id"]) == ["todo"]
        # The worker's first try meets the same outage: the job is put back with backoff.
        await run_sync_jobs(state)
        assert (await consent_row(pg_engine, created["id"])).status == "pending"
        assert await retry_jobs(pg_engine, created["id"]) == ["todo"]
        # The bank is back; the retry (2 s later) completes the consent and queues its sync.
        await browser.put(f"{sandbox_url}/oauth/_admin/token-fault?fault=")
        for _ in range(50):
            await run_sync_jobs(state)
            if (await consent_row(pg_engine, created["id"])).status != "pending":
                break
            await asyncio.sleep(0.2)
        await run_sync_jobs(state)
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "active"
        assert row.last_error is None
        assert row.code_expires_at is None
        assert row.last_synced_at is not None  # the sync the exchange queued has run
        trail = await actions(pg_engine, created["id"])
        assert trail[:1] == ["requested"]
        assert trail[1:-1] == ["token_exchange_failed"] * (len(trail) - 2)
        assert len(trail) >= 4
        assert trail[-1] == "activated"

    async def test_a_code_past_its_life_expires_the_pending_consent(
        self,
        token_outage: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        sandbox_url: str,
        pg_engine: AsyncEngine,
    ) -> None:
        browser = token_outage
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        await browser.put(f"{sandbox_url}/oauth/_admin/token-fault?fault=error")
        assert (await browser.get(callback)).status_code == 303
        await browser.put(f"{sandbox_url}/oauth/_admin/token-fault?fault=")
        row = await consent_row(pg_engine, created["id"])
        later = row.code_expires_at + timedelta(seconds=1)
        async with httpx.AsyncClient() as http:
            status = await exchange_code(
                state.sessionmaker, state.settings, state.keyring, http, created["id"], later
            )
        assert status == "expired"
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "expired"
        assert row.tokens_ciphertext is None
        assert row.last_error.startswith("code expired before the exchange succeeded")
        assert (await actions(pg_engine, created["id"]))[-1] == "code_expired"

    async def test_the_sweep_expires_a_pending_consent_whose_code_outlived_the_retries(
        self,
        token_outage: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        sandbox_url: str,
        pg_engine: AsyncEngine,
    ) -> None:
        browser = token_outage
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        await browser.put(f"{sandbox_url}/oauth/_admin/token-fault?fault=timeout")
        assert (await browser.get(callback)).status_code == 303
        row = await consent_row(pg_engine, created["id"])
        await sweep(state.sessionmaker, state.settings, row.code_expires_at - timedelta(seconds=1))
        assert (await consent_row(pg_engine, created["id"])).status == "pending"
        await sweep(state.sessionmaker, state.settings, row.code_expires_at + timedelta(seconds=1))
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "expired"
        assert row.tokens_ciphertext is None

    async def test_a_code_the_bank_rejects_expires_the_consent(
        self, browser: httpx.AsyncClient, keys: Keys, sandbox_url: str, pg_engine: AsyncEngine
    ) -> None:
        created = await ask(browser, keys.writer)
        callback = await bank_redirect(browser, created["authorization_url"])
        code = parse_qs(urlsplit(callback).query)["code"][0]
        # Someone spends the code at the bank first (without the verifier).
        stolen = await browser.post(
            f"{sandbox_url}/oauth/sandbox-stet14/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": "b2bscore"},
        )
        assert stolen.status_code == 400
        r = await browser.get(callback)
        assert r.status_code == 303
        assert parse_qs(urlsplit(r.headers["location"]).query)["status"] == ["expired"]
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "expired"
        assert row.last_error == "code rejected by the bank: code already used"
        assert row.tokens_ciphertext is None
        assert (await actions(pg_engine, created["id"]))[-1] == "code_rejected"

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
