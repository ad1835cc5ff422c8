"""Re-checks on data change: new books and a new BODACC announcement queue a check of the
watches that see them (no sweep), and the webhook follows."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from b2bscore.kit.state import AppState
from b2bscore.portfolio import changes
from b2bscore.portfolio.models import MonitoredCompany
from b2bscore.training.world import sample_sirens
from tests.books.test_endpoints import _books_fec
from tests.portfolio.test_monitoring import _receiver_endpoint, _types, _watch, sandbox_event
from tests.receivers import webhook_receiver
from tests.webhooks.conftest import FlowKeys, MovingSandbox, bearer

URL = "/v1/monitored-companies"


async def _read(api: httpx.AsyncClient, key: str, watch_id: str) -> dict[str, Any]:
    response = await api.get(f"{URL}/{watch_id}", headers=bearer(key))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _rechecked(
    api: httpx.AsyncClient,
    key: str,
    watch: dict[str, Any],
    timeout: float = 30,  # noqa: ASYNC109
) -> dict[str, Any]:
    """The watch once a check newer than `watch` has run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        read = await _read(api, key, watch["id"])
        if read["last"]["decision_id"] != watch["last"]["decision_id"]:
            return read
        await asyncio.sleep(0.1)
    raise AssertionError("no re-check")


class TestBooksUpload:
    async def test_new_books_recheck_the_uploaders_watch_only(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        (siren,) = sample_sirens(1, seed=880_011)
        mine = await _watch(flow_api, flow_keys.writer, siren)
        theirs = await _watch(flow_api, flow_keys.other_tenant, siren)
        uploaded = await flow_api.post(
            f"/v1/companies/{siren}/books", content=_books_fec(), headers=bearer(flow_keys.writer)
        )
        assert uploaded.status_code == 201, uploaded.text
        read = await _rechecked(flow_api, flow_keys.writer, mine)
        decision = (
            await flow_api.get(
                f"/v1/decisions/{read['last']['decision_id']}", headers=bearer(flow_keys.writer)
            )
        ).json()
        # The check read the books the lender uploaded, as POST /v1/score does.
        assert decision["sources"]["accounting"]["status"] == "ok"
        assert "upload" in (decision["sources"]["accounting"]["detail"] or "")
        # The other tenant's watch of the same company is not re-checked: not its books.
        await asyncio.sleep(1.0)
        assert (await _read(flow_api, flow_keys.other_tenant, theirs["id"]))["last"] == theirs[
            "last"
        ]

    async def test_catch_up_finds_books_newer_than_the_last_check(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        (siren,) = sample_sirens(1, seed=880_012)
        uploaded = await flow_api.post(
            f"/v1/companies/{siren}/books", content=_books_fec(), headers=bearer(flow_keys.writer)
        )
        assert uploaded.status_code == 201
        watch = await _watch(flow_api, flow_keys.writer, siren)
        async with flow_state.sessionmaker() as session:
            assert watch["id"] not in await changes.stale_watches(session, datetime.now(UTC))
            # As if the process had died between the upload's commit and its re-check.
            await session.execute(
                update(MonitoredCompany)
                .where(MonitoredCompany.id == watch["id"])
                .values(last_checked_at=datetime.now(UTC) - timedelta(hours=1))
            )
            await session.commit()
            assert watch["id"] in await changes.stale_watches(session, datetime.now(UTC))
        assert await changes.catch_up(flow_state.jobs, flow_state.sessionmaker) >= 1
        await _rechecked(flow_api, flow_keys.writer, watch)
        async with flow_state.sessionmaker() as session:
            assert watch["id"] not in await changes.stale_watches(session, datetime.now(UTC))


class TestBodaccFeed:
    async def test_new_announcement_rechecks_every_watch_of_the_company(
        self,
        flow_api: httpx.AsyncClient,
        flow_keys: FlowKeys,
        flow_state: AppState,
        moving_sandbox: MovingSandbox,
    ) -> None:
        (siren,) = sample_sirens(1, seed=880_013)
        assert flow_state.sandbox_clients is not None
        feed = flow_state.sandbox_clients.bodacc
        assert feed is not None
        clients = {"test": feed}
        since = datetime.now(UTC).date() - timedelta(days=1)
        with webhook_receiver() as receiver:
            await _receiver_endpoint(flow_api, flow_keys.writer, receiver)
            mine = await _watch(flow_api, flow_keys.writer, siren)
            theirs = await _watch(flow_api, flow_keys.other_tenant, siren)
            sandbox_event(moving_sandbox, siren, "proceedings_opened")
            # BODACC's feed shows it: both tenants' watches are re-checked, no sweep.
            announced = await changes.read_feed(feed, since)
            assert siren in announced
            async with flow_state.sessionmaker() as session:
                assert {mine["id"], theirs["id"]} <= set(
                    await changes.unseen(session, "test", announced)
                )
            queued = await changes.registry_feed(
                flow_state.jobs, flow_state.sessionmaker, clients, since
            )
            assert queued >= 2
            await receiver.wait_for(lambda r: "company.proceedings_opened" in _types(r, siren))
            await _rechecked(flow_api, flow_keys.other_tenant, theirs)
            # Seen now: the next poll of the feed queues nothing for this company.
            async with flow_state.sessionmaker() as session:
                left = await changes.unseen(session, "test", announced)
            assert mine["id"] not in left
            assert theirs["id"] not in left
