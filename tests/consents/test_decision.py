"""A decision under a live consent whose snapshot is missing or stale asks the bank now."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.consents.service import DecisionConsents, consented_bank, sync_lock
from b2bscore.kit.state import AppState
from b2bscore.sources.errors import SourceTimeout, SourceUnavailable
from tests.consents.conftest import NO_CONSENT, Keys, answer_at_bank, ask
from tests.consents.test_flow import consent_row, run_sync_jobs, score

DAY = 86_400


async def active(browser: httpx.AsyncClient, key: str, siren: str, **kwargs: Any) -> str:
    """A consent made active through the bank's page (its first sync not run); its id."""
    created = await ask(browser, key, siren=siren, **kwargs)
    back = await answer_at_bank(browser, created["authorization_url"])
    assert back.json()["status"] == "active"
    consent_id: str = created["id"]
    return consent_id


async def age_snapshot(engine: AsyncEngine, consent_id: str, seconds: int) -> None:
    """Make the consent's snapshot (and last sync) seconds older than it is."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE consents SET snapshot_at = snapshot_at - make_interval(secs => :s), "
                "last_synced_at = last_synced_at - make_interval(secs => :s) WHERE id = :id"
            ),
            {"s": seconds, "id": consent_id},
        )


async def waiting_syncs(engine: AsyncEngine, consent_id: str) -> int:
    """Sync jobs of the consent waiting in the queue."""
    async with engine.connect() as connection:
        found = await connection.execute(
            text("SELECT count(*) FROM procrastinate_jobs WHERE lock = :lock AND status = 'todo'"),
            {"lock": sync_lock(consent_id)},
        )
        return int(found.scalar_one())


async def synced(state: AppState, engine: AsyncEngine, consent_id: str) -> None:
    """Run workers until the consent's first sync is done (a failed try is retried)."""
    for _ in range(40):
        await run_sync_jobs(state)
        if (await consent_row(engine, consent_id)).last_synced_at is not None:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("the consent never synced")


def consents_of(state: AppState) -> DecisionConsents:
    """What a test-mode decision uses of consents."""
    return DecisionConsents(
        settings=state.settings,
        sessions=state.sessionmaker,
        keyring=state.keyring,
        tokenizer=state.tokenizer,
        clients=state.sandbox_clients,
        jobs=state.jobs,
    )


class TestBankAskedInTheDecision:
    """No fresh snapshot but an active consent: the bank, with the consent's token."""

    async def test_before_the_first_sync_the_decision_reads_the_bank(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState
    ) -> None:
        # The world's no-consent company: without the consent's token the bank says no.
        before = await score(browser, keys.writer, NO_CONSENT)
        assert before["sources"]["open_banking"]["status"] == "unavailable"
        consent_id = await active(browser, keys.writer, NO_CONSENT)
        answer = await score(browser, keys.writer, NO_CONSENT)
        bank = answer["sources"]["open_banking"]
        assert bank["status"] == "ok"
        assert bank["detail"] == "bank (consent)"
        assert bank["snapshot"] == {
            "consent_id": consent_id,
            "age_seconds": 0.0,
            "scopes": ["balances", "transactions"],
            "source": "bank",
            "stale": False,
        }
        assert answer["degraded"] is False
        # Fed by the same history the snapshot will hold: the first sync then serves.
        await run_sync_jobs(state)
        again = await score(browser, keys.writer, NO_CONSENT)
        assert again["sources"]["open_banking"]["detail"] == "snapshot"
        assert again["sources"]["open_banking"]["snapshot"]["source"] == "snapshot"
        assert again["score"] == answer["score"]

    async def test_a_stale_snapshot_makes_the_decision_ask_the_bank_and_queue_a_sync(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        siren = "552100554"
        consent_id = await active(browser, keys.other_tenant, siren, bank="sandbox-stet16")
        await synced(state, pg_engine, consent_id)
        assert await waiting_syncs(pg_engine, consent_id) == 0
        await age_snapshot(pg_engine, consent_id, 2 * DAY)
        answer = await score(browser, keys.other_tenant, siren)
        bank = answer["sources"]["open_banking"]
        assert bank["status"] == "ok"
        assert bank["snapshot"]["source"] == "bank"
        assert answer["degraded"] is False
        # The sync is queued beside the decision, not in its way.
        for _ in range(100):
            if await waiting_syncs(pg_engine, consent_id):
                break
            await asyncio.sleep(0.02)
        assert await waiting_syncs(pg_engine, consent_id) == 1
        stale_sync = (await consent_row(pg_engine, consent_id)).last_synced_at
        await run_sync_jobs(state)
        assert (await consent_row(pg_engine, consent_id)).last_synced_at > stale_sync

    async def test_balances_only_consent_asks_the_bank_for_balances_only(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState
    ) -> None:
        siren = "732829320"
        created = await ask(browser, keys.writer, siren=siren, scopes=("balances",))
        back = await answer_at_bank(browser, created["authorization_url"], scopes=("balances",))
        assert back.json()["status"] == "active"
        answer = await score(browser, keys.writer, siren)
        bank = answer["sources"]["open_banking"]
        assert bank["snapshot"]["source"] == "bank"
        assert bank["snapshot"]["scopes"] == ["balances"]
        decision = (
            await browser.get(
                f"/v1/decisions/{answer['decision_id']}",
                headers={"Authorization": f"Bearer {keys.writer}"},
            )
        ).json()
        assert decision["features"]["bank_inflows_90d"] is None  # missing, never invented


class TestDegradingInTime:
    """The bank too slow or refusing: the stale snapshot, its age shown, or nothing."""

    async def test_bank_cut_at_the_deadline_gives_the_stale_snapshot_with_its_age(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        siren = "542065479"
        consent_id = await active(browser, keys.writer, siren)
        await synced(state, pg_engine, consent_id)
        await age_snapshot(pg_engine, consent_id, 3 * DAY)
        started = time.monotonic()
        # 21 ms of budget: the bank is asked, and its answer cut 20 ms before the deadline.
        found = await consented_bank(
            consents_of(state),
            tenant_id=await tenant_of(pg_engine, consent_id),
            mode="test",
            siren=siren,
            deadline=started + 0.021,
        )
        assert time.monotonic() - started < 0.25  # bounded by the deadline (loaded machine)
        assert found is not None
        assert found.stale is True
        assert found.detail == "stale snapshot (bank: deadline)"
        assert found.info["source"] == "snapshot"
        assert found.info["stale"] is True
        assert found.info["age_seconds"] >= 3 * DAY

    async def test_an_access_token_due_for_refresh_is_not_used_the_snapshot_stands_in(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        siren = "552100554"
        consent_id = await active(browser, keys.writer, siren)
        await synced(state, pg_engine, consent_id)
        await age_snapshot(pg_engine, consent_id, 2 * DAY)
        async with pg_engine.begin() as connection:
            await connection.execute(
                text("UPDATE consents SET access_expires_at = now() WHERE id = :id"),
                {"id": consent_id},
            )
        answer = await score(browser, keys.writer, siren)
        bank = answer["sources"]["open_banking"]
        assert bank["status"] == "cached"
        assert bank["detail"] == "stale snapshot (bank: access token due for refresh)"
        assert bank["snapshot"]["stale"] is True
        assert bank["snapshot"]["age_seconds"] >= 2 * DAY
        assert answer["degraded"] is True
        # The sync the decision queued refreshes the token and the snapshot.
        for _ in range(100):
            if await waiting_syncs(pg_engine, consent_id):
                break
            await asyncio.sleep(0.02)
        await run_sync_jobs(state)
        again = await score(browser, keys.writer, siren)
        assert again["sources"]["open_banking"]["detail"] == "snapshot"
        assert again["degraded"] is False

    async def test_without_snapshot_an_unusable_token_leaves_the_decision_as_without_consent(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        """Nothing asked of the bank and nothing on file: no error of the consent's making."""
        siren = "552081317"  # no other consent of this tenant on it
        consent_id = await active(browser, keys.writer, siren)
        await synced(state, pg_engine, consent_id)  # then undone: no sync left to race
        async with pg_engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE consents SET access_expires_at = now(), snapshot_ciphertext = NULL,"
                    " snapshot_at = NULL WHERE id = :id"
                ),
                {"id": consent_id},
            )
        found = await consented_bank(
            consents_of(state),
            tenant_id=await tenant_of(pg_engine, consent_id),
            mode="test",
            siren=siren,
            deadline=time.monotonic() + 0.4,
        )
        assert found is None
        # ... and the sync that will make it usable is queued.
        for _ in range(100):
            if await waiting_syncs(pg_engine, consent_id):
                break
            await asyncio.sleep(0.02)
        assert await waiting_syncs(pg_engine, consent_id)

    async def test_without_snapshot_a_slow_bank_is_a_timeout(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        siren = "542107651"
        consent_id = await active(browser, keys.writer, siren)
        with pytest.raises(SourceTimeout):
            await consented_bank(
                consents_of(state),
                tenant_id=await tenant_of(pg_engine, consent_id),
                mode="test",
                siren=siren,
                deadline=time.monotonic() + 0.021,
            )

    async def test_a_bank_that_refuses_the_token_is_not_overruled_by_the_snapshot(
        self,
        browser: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        pg_engine: AsyncEngine,
        sandbox_url: str,
    ) -> None:
        siren = "775670417"
        consent_id = await active(browser, keys.writer, siren)
        await synced(state, pg_engine, consent_id)
        await age_snapshot(pg_engine, consent_id, 2 * DAY)
        await browser.post(f"{sandbox_url}/oauth/_admin/revoke-all?siren={siren}")
        with pytest.raises(SourceUnavailable):
            await consented_bank(
                consents_of(state),
                tenant_id=await tenant_of(pg_engine, consent_id),
                mode="test",
                siren=siren,
                deadline=time.monotonic() + 2,
            )
        answer = await score(browser, keys.writer, siren)
        assert answer["sources"]["open_banking"]["status"] == "unavailable"
        assert answer["degraded"] is True


async def tenant_of(engine: AsyncEngine, consent_id: str) -> str:
    """The tenant of a consent."""
    return str((await consent_row(engine, consent_id)).tenant_id)
