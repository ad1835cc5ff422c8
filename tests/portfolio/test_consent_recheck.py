"""A consent sync that stores a new bank snapshot re-checks the tenant's watch of the company:
the whole consent flow through the sandbox bank, then the job engine's queues."""

from __future__ import annotations

from typing import Any

import httpx
from procrastinate.jobs import Status

from b2bscore.kit.jobs import engine
from b2bscore.kit.state import AppState
from b2bscore.portfolio import changes
from b2bscore.tenants.models import utcnow
from tests.consents.conftest import NO_CONSENT, Keys, answer_at_bank, ask, bearer

URL = "/v1/monitored-companies"


async def run_queue(state: AppState, queue: str) -> None:
    """Run a worker of the real job engine until the queue is empty."""
    assert state.jobs is not None
    await state.jobs.run_worker(state, wait=False, queues=[queue], concurrency=2)


async def watch(browser: httpx.AsyncClient, key: str) -> str:
    """Watch the no-consent company; its id."""
    response = await browser.post(URL, json={"siren": NO_CONSENT}, headers=bearer(key))
    assert response.status_code == 201, response.text
    watch_id: str = response.json()["id"]
    return watch_id


async def read(browser: httpx.AsyncClient, key: str, watch_id: str) -> dict[str, Any]:
    """GET a watch."""
    response = await browser.get(f"{URL}/{watch_id}", headers=bearer(key))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def bank_source(browser: httpx.AsyncClient, key: str, decision_id: str) -> dict[str, Any]:
    """The open-banking source of a recorded decision."""
    response = await browser.get(f"/v1/decisions/{decision_id}", headers=bearer(key))
    assert response.status_code == 200
    source: dict[str, Any] = response.json()["sources"]["open_banking"]
    return source


async def queued_checks() -> set[str]:
    """The watches with a portfolio.check job waiting."""
    jobs = await engine.job_manager.list_jobs_async(
        task=changes.CHECK_TASK, status=Status.TODO.value
    )
    return {str(job.task_kwargs["monitored_id"]) for job in jobs}


class TestConsentSyncRechecks:
    async def test_new_snapshot_rechecks_the_tenants_watch_only(
        self, browser: httpx.AsyncClient, keys: Keys, state: AppState
    ) -> None:
        mine = await watch(browser, keys.writer)
        theirs = await watch(browser, keys.other_tenant)
        await run_queue(state, "monitoring")
        before = await read(browser, keys.writer, mine)
        theirs_before = await read(browser, keys.other_tenant, theirs)
        assert before["last"] is not None
        bank = await bank_source(browser, keys.writer, before["last"]["decision_id"])
        assert bank["status"] == "unavailable"  # no consent yet

        created = await ask(browser, keys.writer)
        back = await answer_at_bank(browser, created["authorization_url"])
        assert back.json()["status"] == "active"
        await run_queue(state, "consents")  # the sync stores the snapshot, then its hook runs

        waiting = await queued_checks()
        assert mine in waiting
        assert theirs not in waiting  # the snapshot is tenant A's alone
        await run_queue(state, "monitoring")
        after = await read(browser, keys.writer, mine)
        assert after["last"]["decision_id"] != before["last"]["decision_id"]
        bank = await bank_source(browser, keys.writer, after["last"]["decision_id"])
        assert bank["status"] == "ok"
        assert bank["detail"] == "snapshot"
        assert bank["snapshot"]["consent_id"] == created["id"]
        assert (await read(browser, keys.other_tenant, theirs))["last"] == theirs_before["last"]
        # Nothing left for the catch-up: the check saw the snapshot.
        async with state.sessionmaker() as session:
            assert mine not in await changes.stale_watches(session, utcnow())
