"""Refresh, expiry and purge under a controllable clock; syncs racing on PostgreSQL.

Runs after the other consent modules (its sweeps move the clock months ahead for every
consent in the database).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.consents import service
from b2bscore.consents.models import ConsentEvent
from b2bscore.consents.service import sweep, sync_consent, sync_lock
from b2bscore.consents.tasks import sync_tools
from b2bscore.kit.state import AppState
from b2bscore.tenants.models import utcnow
from b2bscore.webhooks.models import Event
from tests.consents.conftest import Keys, answer_at_bank, ask
from tests.consents.test_flow import consent_row


async def active_consent(browser: httpx.AsyncClient, keys: Keys, siren: str, bank: str) -> str:
    """A consent made active through the bank's page; its id."""
    created = await ask(browser, keys.writer, siren=siren, bank=bank)
    back = await answer_at_bank(browser, created["authorization_url"])
    assert back.json()["status"] == "active"
    consent_id: str = created["id"]
    return consent_id


async def actions(engine: AsyncEngine, consent_id: str) -> list[str]:
    """The audit trail's actions of a consent, oldest first."""
    async with engine.connect() as connection:
        query = (
            sa.select(ConsentEvent.action)
            .where(ConsentEvent.consent_id == consent_id)
            .order_by(ConsentEvent.at)
        )
        return list((await connection.execute(query)).scalars().all())


async def outbox(engine: AsyncEngine, consent_id: str) -> list[str]:
    """The outbox events of a consent, oldest first."""
    async with engine.connect() as connection:
        query = (
            sa.select(Event.type)
            .where(Event.ordering_key == f"consent:{consent_id}")
            .order_by(Event.created_at)
        )
        return list((await connection.execute(query)).scalars().all())


class TestRefreshAndIncrementalSync:
    """Tokens refreshed before they expire; a sync failing keeps the last snapshot."""

    async def test_refresh_then_incremental_sync_then_failed_refresh_keeps_snapshot(
        self,
        browser: httpx.AsyncClient,
        keys: Keys,
        state: AppState,
        pg_engine: AsyncEngine,
        sandbox_url: str,
    ) -> None:
        consent_id = await active_consent(browser, keys, "552100554", "sandbox-stet14")
        now = utcnow()
        async with httpx.AsyncClient() as http:
            tools = sync_tools(state, http)
            assert await sync_consent(tools, consent_id, now) == "synced"
            first = await consent_row(pg_engine, consent_id)
            full = service._read_snapshot(state.keyring, first)
            assert full is not None
            # An hour later the access token is about to expire: refreshed, then synced
            # from the last sync on; the history is the same, no entry twice.
            later = now + timedelta(minutes=58)
            assert await sync_consent(tools, consent_id, later) == "synced"
            second = await consent_row(pg_engine, consent_id)
            assert second.tokens_ciphertext != first.tokens_ciphertext
            assert second.access_expires_at > first.access_expires_at
            again = service._read_snapshot(state.keyring, second)
            assert again is not None
            assert [len(a["transactions"]) for a in again["accounts"]] == [
                len(a["transactions"]) for a in full["accounts"]
            ]
            # The token endpoint is down at the next refresh: the sync fails (the job
            # retries) and the previous snapshot stays in place, usable.
            await http.put(f"{sandbox_url}/oauth/_admin/token-fault?fault=error")
            try:
                failed = False
                try:
                    await sync_consent(tools, consent_id, later + timedelta(minutes=58))
                except service.TokenEndpointError:
                    failed = True
                assert failed
            finally:
                await http.put(f"{sandbox_url}/oauth/_admin/token-fault?fault=")
        third = await consent_row(pg_engine, consent_id)
        assert third.status == "active"
        assert third.snapshot_ciphertext == second.snapshot_ciphertext
        assert "refreshed" in await actions(pg_engine, consent_id)


class TestTwoWorkersRace:
    """Two workers on PostgreSQL, two jobs of the same consent: one at a time."""

    async def test_the_lock_serialises_syncs_of_one_consent(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        consent_id = await active_consent(browser, keys, "732829320", "sandbox-stet16")
        jobs = state.jobs
        assert jobs is not None
        # The callback queued one sync; two more under the lock alone (no queueing lock).
        for _ in range(2):
            await jobs.defer(service.SYNC_TASK, lock=sync_lock(consent_id), consent_id=consent_id)
        running: list[int] = []
        stop = asyncio.Event()

        async def watch() -> None:
            query = sa.text(
                "SELECT count(*) FROM procrastinate_jobs WHERE lock = :lock AND status = 'doing'"
            )
            async with pg_engine.connect() as connection:
                while not stop.is_set():
                    found = await connection.execute(query, {"lock": sync_lock(consent_id)})
                    running.append(int(found.scalar_one()))
                    await connection.commit()
                    await asyncio.sleep(0.002)

        async def waiting() -> int:
            async with pg_engine.connect() as connection:
                left = await connection.execute(
                    sa.text(
                        "SELECT count(*) FROM procrastinate_jobs WHERE lock = :lock "
                        "AND status IN ('todo', 'doing')"
                    ),
                    {"lock": sync_lock(consent_id)},
                )
                return int(left.scalar_one())

        watcher = asyncio.create_task(watch())
        # A worker run with wait=False stops when nothing can be taken, which a job held
        # back by the lock cannot: the pair is started again until the jobs are done.
        for _ in range(20):
            await asyncio.gather(
                jobs.run_worker(state, wait=False, queues=["consents"], name="w1", concurrency=2),
                jobs.run_worker(state, wait=False, queues=["consents"], name="w2", concurrency=2),
            )
            if await waiting() == 0:
                break
        stop.set()
        await watcher
        assert max(running) == 1  # seen running, never two at once
        assert await waiting() == 0
        row = await consent_row(pg_engine, consent_id)
        assert row.last_synced_at is not None


class TestExpiry:
    """Announce ahead, expire, purge after the retention; the bank may grant less."""

    async def test_expiring_expired_purged(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState, pg_engine: AsyncEngine
    ) -> None:
        consent_id = await active_consent(browser, keys, "552100554", "sandbox-stet16")
        async with httpx.AsyncClient() as http:
            assert await sync_consent(sync_tools(state, http), consent_id, utcnow()) == "synced"
        row = await consent_row(pg_engine, consent_id)
        # The STET 1.6 sandbox bank grants 90 days, less than PSD2's 180: it wins.
        assert timedelta(days=89) < row.expires_at - row.activated_at <= timedelta(days=90)
        settings = state.settings
        await sweep(state.sessionmaker, settings, row.expires_at - timedelta(days=3))
        assert await outbox(pg_engine, consent_id) == ["consent.expiring"]
        # Announced once only.
        await sweep(state.sessionmaker, settings, row.expires_at - timedelta(days=2))
        assert await outbox(pg_engine, consent_id) == ["consent.expiring"]
        await sweep(state.sessionmaker, settings, row.expires_at + timedelta(seconds=1))
        expired = await consent_row(pg_engine, consent_id)
        assert expired.status == "expired"
        assert expired.tokens_ciphertext is None
        assert expired.snapshot_ciphertext is not None  # kept for the retention only
        assert await outbox(pg_engine, consent_id) == ["consent.expiring", "consent.expired"]
        after = row.expires_at + timedelta(days=settings.consent_retention_days, seconds=2)
        await sweep(state.sessionmaker, settings, after)
        purged = await consent_row(pg_engine, consent_id)
        assert purged.snapshot_ciphertext is None
        assert purged.snapshot_at is None
        assert (await actions(pg_engine, consent_id))[-3:] == ["expiring", "expired", "purged"]
