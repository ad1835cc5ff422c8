"""The whole consent flow through the sandbox bank's page, and the data it brings."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.consents.models import Consent, ConsentEvent
from b2bscore.kit.state import AppState
from b2bscore.webhooks.models import Event
from tests.consents.conftest import NO_CONSENT, Keys, answer_at_bank, ask, bearer


async def run_sync_jobs(state: AppState) -> None:
    """Run a worker of the real job engine until the consents queue is empty."""
    assert state.jobs is not None
    await state.jobs.run_worker(state, wait=False, queues=["consents"], concurrency=2)


async def score(browser: httpx.AsyncClient, key: str, siren: str) -> dict[str, Any]:
    """POST /v1/score for siren."""
    r = await browser.post(
        "/v1/score",
        json={"siren": siren, "requested_amount": "25000.00", "product": "term_loan"},
        headers=bearer(key),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def read_consent(browser: httpx.AsyncClient, key: str, consent_id: str) -> dict[str, Any]:
    """GET /v1/consents/{id}."""
    r = await browser.get(f"/v1/consents/{consent_id}", headers=bearer(key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def consent_row(engine: AsyncEngine, consent_id: str) -> Any:
    """The stored row of a consent, read straight from the database."""
    async with engine.connect() as connection:
        query = sa.select(Consent.__table__).where(Consent.id == consent_id)
        return (await connection.execute(query)).one()


class TestWholeFlow:
    """Ask, consent at the bank's page, come back, sync, score from the snapshot."""

    async def test_no_consent_company_gets_bank_data_through_the_flow(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        before = await score(browser, keys.writer, NO_CONSENT)
        assert before["sources"]["open_banking"]["status"] == "unavailable"

        created = await ask(browser, keys.writer)
        assert created["status"] == "pending"
        assert "code_challenge_method=S256" in created["authorization_url"]
        back = await answer_at_bank(browser, created["authorization_url"])
        # The user lands on the lender's page with the consent id and its status.
        assert back.status_code == 200
        assert str(back.url).startswith("http://lender.test/consent-done")
        assert back.json() == {"consent_id": created["id"], "status": "active"}

        row = await consent_row(pg_engine, created["id"])
        assert row.status == "active"
        assert row.state_hash is None  # spent
        assert row.tokens_ciphertext is not None
        assert b"at-" not in row.tokens_ciphertext  # sealed, not in clear

        await run_sync_jobs(state)
        got = (
            await browser.get(f"/v1/consents/{created['id']}", headers=bearer(keys.writer))
        ).json()
        assert got["status"] == "active"
        assert got["scopes"] == ["balances", "transactions"]
        assert got["last_synced_at"] is not None
        assert got["accounts"]
        assert all(a.startswith("tok_") for a in got["accounts"])
        assert got["expires_at"] is not None

        after = await score(browser, keys.writer, NO_CONSENT)
        bank = after["sources"]["open_banking"]
        assert bank["status"] == "ok"
        assert bank["detail"] == "snapshot"
        assert bank["snapshot"]["consent_id"] == created["id"]
        assert bank["snapshot"]["scopes"] == ["balances", "transactions"]
        assert bank["snapshot"]["age_seconds"] >= 0
        # Another tenant's decision on the same company does not see this consent.
        other = await score(browser, keys.other_tenant, NO_CONSENT)
        assert other["sources"]["open_banking"]["status"] == "unavailable"

    async def test_partial_grant_balances_only_scores_without_transaction_features(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState
    ) -> None:
        siren = "552100554"
        created = await ask(browser, keys.no_read, siren=siren, bank="sandbox-stet16")
        back = await answer_at_bank(
            browser, created["authorization_url"], accounts=1, scopes=("balances",)
        )
        assert back.json()["status"] == "active"
        await run_sync_jobs(state)
        got = (
            await browser.get(f"/v1/consents/{created['id']}", headers=bearer(keys.writer))
        ).json()
        assert got["scopes"] == ["balances"]
        assert len(got["accounts"]) == 1
        answer = await score(browser, keys.writer, siren)
        bank = answer["sources"]["open_banking"]
        assert bank["detail"] == "snapshot"
        assert bank["snapshot"]["scopes"] == ["balances"]
        decision = (
            await browser.get(f"/v1/decisions/{answer['decision_id']}", headers=bearer(keys.writer))
        ).json()
        features = decision["features"]
        # Missing, never invented: no transaction feature under a balances-only consent.
        assert features["bank_inflows_90d"] is None
        assert features["bank_history_months"] is None

    async def test_refusal_at_the_bank(
        self, browser: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        created = await ask(browser, keys.writer)
        back = await answer_at_bank(browser, created["authorization_url"], action="refuse")
        assert back.json() == {"consent_id": created["id"], "status": "refused"}
        row = await consent_row(pg_engine, created["id"])
        assert row.status == "refused"
        assert row.tokens_ciphertext is None

    async def test_revocation_purges_tokens_and_snapshot_and_is_audited(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        created = await ask(browser, keys.writer)
        await answer_at_bank(browser, created["authorization_url"])
        await run_sync_jobs(state)
        assert (await consent_row(pg_engine, created["id"])).snapshot_ciphertext is not None
        r = await browser.delete(f"/v1/consents/{created['id']}", headers=bearer(keys.writer))
        assert r.status_code == 200
        assert r.json()["status"] == "revoked"
        row = await consent_row(pg_engine, created["id"])
        assert row.tokens_ciphertext is None
        assert row.snapshot_ciphertext is None
        assert row.snapshot_at is None
        async with pg_engine.connect() as connection:
            actions = (
                (
                    await connection.execute(
                        sa.select(ConsentEvent.action).where(
                            ConsentEvent.consent_id == created["id"]
                        )
                    )
                )
                .scalars()
                .all()
            )
            events = (
                (
                    await connection.execute(
                        sa.select(Event.type).where(
                            Event.ordering_key == f"consent:{created['id']}"
                        )
                    )
                )
                .scalars()
                .all()
            )
        assert {"requested", "activated", "revoked"} <= set(actions)
        assert events == ["consent.revoked"]
        # The decision path no longer finds any snapshot of it.
        answer = await score(browser, keys.writer, NO_CONSENT)
        snapshot = answer["sources"]["open_banking"].get("snapshot")
        assert snapshot is None or snapshot["consent_id"] != created["id"]
