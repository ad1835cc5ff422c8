"""STET's identity scope (psuIdentity): asked, granted or not at the bank's page, minimised."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.consents import service
from b2bscore.kit.state import AppState
from b2bscore.training.world import company
from tests.consents.conftest import Keys, answer_at_bank, ask, bearer
from tests.consents.test_flow import consent_row, read_consent, run_sync_jobs, score

ALL = ("balances", "transactions", "identity")


class TestIdentityScope:
    """The connected user's name, for the lender's KYB only when granted."""

    async def test_granted_identity_names_the_holder_and_feeds_no_decision(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        siren = "552100554"
        created = await ask(browser, keys.writer, siren=siren, bank="sandbox-stet16", scopes=ALL)
        page = await browser.get(created["authorization_url"])
        assert 'value="identity"' in page.text  # the category is offered at the bank
        back = await answer_at_bank(browser, created["authorization_url"])
        assert back.json()["status"] == "active"
        await run_sync_jobs(state)
        got = await read_consent(browser, keys.writer, created["id"])
        assert got["scopes"] == ["balances", "identity", "transactions"]
        assert got["holder"] == company(siren).name
        listed = await browser.get("/v1/consents", headers=bearer(keys.writer))
        assert {c["id"]: c["holder"] for c in listed.json()["items"]}[created["id"]] == (
            company(siren).name
        )
        answer = await score(browser, keys.writer, siren)
        assert answer["sources"]["open_banking"]["detail"] == "snapshot"
        # The name is no feature: the decision's record of the snapshot leaves it out.
        snapshot = service._SNAPSHOTS[
            (created["id"], (await consent_row(pg_engine, created["id"])).snapshot_at)
        ]
        assert b"holder" not in snapshot.packed
        assert company(siren).name.encode() not in snapshot.packed

    async def test_identity_left_unticked_is_neither_granted_nor_read(
        self,
        browser: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        pg_engine: AsyncEngine,
        sandbox_url: str,
    ) -> None:
        siren = "732829320"
        created = await ask(browser, keys.writer, siren=siren, scopes=ALL)
        back = await answer_at_bank(
            browser, created["authorization_url"], scopes=("balances", "transactions")
        )
        assert back.json()["status"] == "active"
        await run_sync_jobs(state)
        got = await read_consent(browser, keys.writer, created["id"])
        assert got["requested_scopes"] == ["balances", "identity", "transactions"]
        assert got["scopes"] == ["balances", "transactions"]
        assert got["holder"] is None
        row = await consent_row(pg_engine, created["id"])
        snapshot = service._read_snapshot(state.keyring, row)
        assert snapshot is not None
        assert "holder" not in snapshot
        # The bank itself refuses the identity to this consent's token.
        token = service._open_tokens(state.keyring, row)["access_token"]
        refused = await browser.get(
            f"{sandbox_url}/stet/v1/end-user-identity", headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 403
        assert refused.json()["error"] == "consent_missing"

    async def test_an_unknown_scope_is_a_422_naming_scopes(
        self, browser: httpx.AsyncClient, keys: Keys
    ) -> None:
        r = await browser.post(
            "/v1/consents",
            json={
                "siren": "552100554",
                "bank": "sandbox-stet14",
                "scopes": ["balances", "payments"],
                "redirect_uri": "http://lender.test/consent-done",
            },
            headers=bearer(keys.writer),
        )
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert any(e["field"].startswith("scopes") for e in r.json()["errors"])
