"""Monitoring end to end: the sandbox world moves (`b2bscore sandbox event`), a sweep re-checks,
the webhook arrives signed at a real receiver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from b2bscore.kit.state import AppState
from b2bscore.portfolio import service as monitoring
from tests.receivers import Receiver, webhook_receiver
from tests.webhooks.conftest import FlowKeys, MovingSandbox, bearer

URL = "/v1/monitored-companies"


def sandbox_event(sandbox: MovingSandbox, siren: str, kind: str) -> None:
    """`b2bscore sandbox event SIREN KIND`, writing the store the sandbox reads."""
    env = {**os.environ, "B2BSCORE_SANDBOX_EVENTS_FILE": str(sandbox.events_file)}
    env.pop("B2BSCORE_SANDBOX_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "b2bscore", "sandbox", "event", siren, kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert kind in result.stdout


async def _watch(api: httpx.AsyncClient, key: str, siren: str, **extra: Any) -> dict[str, Any]:
    response = await api.post(URL, json={"siren": siren, **extra}, headers=bearer(key))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    # The first check runs in the background and sets the baseline.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        read = (await api.get(f"{URL}/{body['id']}", headers=bearer(key))).json()
        if read["last_checked_at"] is not None:
            return dict(read)
        await asyncio.sleep(0.05)
    raise AssertionError("no first check")


async def _receiver_endpoint(api: httpx.AsyncClient, key: str, receiver: Receiver) -> None:
    response = await api.post(
        "/v1/webhook-endpoints",
        json={
            "url": receiver.url,
            "event_types": [
                "company.closed",
                "company.proceedings_opened",
                "company.score_changed",
            ],
        },
        headers=bearer(key),
    )
    assert response.status_code == 201
    receiver.secrets["endpoint"] = response.json()["secret"]


def _types(receiver: Receiver, siren: str) -> list[str]:
    return [r.payload["type"] for r in receiver.ok() if r.payload["data"]["siren"] == siren]


class TestMonitoringEndToEnd:
    async def test_closed_company(
        self,
        flow_api: httpx.AsyncClient,
        flow_keys: FlowKeys,
        flow_state: AppState,
        moving_sandbox: MovingSandbox,
    ) -> None:
        siren = "958806150"
        with webhook_receiver() as receiver:
            await _receiver_endpoint(flow_api, flow_keys.writer, receiver)
            watched = await _watch(flow_api, flow_keys.writer, siren, external_reference="c-1")
            assert watched["active"] is True
            assert watched["last"]["grade"] in "ABCDE"
            # Nothing moved: a sweep emits nothing.
            outcomes = await monitoring.sweep(flow_state, siren=siren)
            assert [o.events for o in outcomes] == [[]]
            sandbox_event(moving_sandbox, siren, "closed")
            outcomes = await monitoring.sweep(flow_state, siren=siren)
            assert "company.closed" in outcomes[0].events
            await receiver.wait_for(lambda r: "company.closed" in _types(r, siren))
            got = next(r for r in receiver.ok() if r.payload["type"] == "company.closed")
            assert got.verified == {"endpoint": True}
            assert got.payload["data"]["external_reference"] == "c-1"
            read = (
                await flow_api.get(f"{URL}/{watched['id']}", headers=bearer(flow_keys.writer))
            ).json()
            assert read["active"] is False

    async def test_proceedings_opened_once(
        self,
        flow_api: httpx.AsyncClient,
        flow_keys: FlowKeys,
        flow_state: AppState,
        moving_sandbox: MovingSandbox,
    ) -> None:
        siren = "527295240"
        with webhook_receiver() as receiver:
            await _receiver_endpoint(flow_api, flow_keys.writer, receiver)
            await _watch(flow_api, flow_keys.writer, siren)
            sandbox_event(moving_sandbox, siren, "proceedings_opened")
            first = await monitoring.sweep(flow_state, siren=siren)
            assert "company.proceedings_opened" in first[0].events
            # Proceedings weigh on the score too: the grade drop is reported beside them.
            again = await monitoring.sweep(flow_state, siren=siren)
            assert "company.proceedings_opened" not in again[0].events
            await receiver.wait_for(lambda r: "company.proceedings_opened" in _types(r, siren))

    async def test_cash_squeeze_changes_the_score(
        self,
        flow_api: httpx.AsyncClient,
        flow_keys: FlowKeys,
        flow_state: AppState,
        moving_sandbox: MovingSandbox,
    ) -> None:
        siren = "802132902"
        with webhook_receiver() as receiver:
            await _receiver_endpoint(flow_api, flow_keys.writer, receiver)
            before = await _watch(flow_api, flow_keys.writer, siren, rules={"grade_drop": 1})
            sandbox_event(moving_sandbox, siren, "cash_squeeze")
            outcomes = await monitoring.sweep(flow_state, siren=siren)
            assert outcomes[0].events == ["company.score_changed"], before["last"]
            await receiver.wait_for(lambda r: "company.score_changed" in _types(r, siren))
            data = next(
                r.payload["data"]
                for r in receiver.ok()
                if r.payload["type"] == "company.score_changed"
            )
            assert data["previous"]["score"] == before["last"]["score"]
            assert data["current"]["score"] < data["previous"]["score"]
            assert data["triggers"]
            assert data["reasons_moved"]
            # The new score is a full audited decision of the tenant.
            decision = await flow_api.get(
                f"/v1/decisions/{data['current']['decision_id']}", headers=bearer(flow_keys.writer)
            )
            assert decision.status_code == 200


class TestWatchCompany:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.post(URL, json={"siren": "958806150"})).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        response = await flow_api.post(
            URL, json={"siren": "958806150"}, headers=bearer(flow_keys.reader_only)
        )
        assert response.status_code == 403

    async def test_422_names_the_field(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        response = await flow_api.post(
            URL, json={"siren": "123456789"}, headers=bearer(flow_keys.writer)
        )
        assert response.status_code == 422
        assert "siren" in response.text

    async def test_valid_then_409_on_a_second_watch(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        response = await flow_api.post(
            URL, json={"siren": "547738039"}, headers=bearer(flow_keys.other_tenant)
        )
        assert response.status_code == 201
        again = await flow_api.post(
            URL, json={"siren": "547738039"}, headers=bearer(flow_keys.other_tenant)
        )
        assert again.status_code == 409


class TestReadWatched:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.get(f"{URL}/x")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        assert (
            await flow_api.get(f"{URL}/x", headers=bearer(flow_keys.writer_only))
        ).status_code == 403

    async def test_404_other_tenant(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        created = await flow_api.post(
            URL, json={"siren": "708644737"}, headers=bearer(flow_keys.writer)
        )
        item = created.json()["id"]
        for key in (flow_keys.other_tenant, flow_keys.live):
            assert (await flow_api.get(f"{URL}/{item}", headers=bearer(key))).status_code == 404
        listed = (await flow_api.get(URL, headers=bearer(flow_keys.other_tenant))).json()["data"]
        assert item not in {i["id"] for i in listed}

    async def test_valid_list_and_delete(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        created = (
            await flow_api.post(URL, json={"siren": "534917570"}, headers=bearer(flow_keys.live))
        ).json()
        listed = (await flow_api.get(URL, headers=bearer(flow_keys.live))).json()["data"]
        assert created["id"] in {i["id"] for i in listed}
        assert (
            await flow_api.delete(f"{URL}/{created['id']}", headers=bearer(flow_keys.other_tenant))
        ).status_code == 404
        assert (
            await flow_api.delete(f"{URL}/{created['id']}", headers=bearer(flow_keys.live))
        ).status_code == 204


class TestMonitoringRules:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.get("/v1/monitoring-rules")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        response = await flow_api.put(
            "/v1/monitoring-rules", json={"grade_drop": 2}, headers=bearer(flow_keys.reader_only)
        )
        assert response.status_code == 403

    async def test_valid_per_tenant(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        response = await flow_api.put(
            "/v1/monitoring-rules",
            json={"grade_drop": 2, "score_bands": [600, 400]},
            headers=bearer(flow_keys.other_tenant),
        )
        assert response.status_code == 200
        assert response.json()["rules"] == {"grade_drop": 2, "score_bands": [400, 600]}
        mine = (await flow_api.get("/v1/monitoring-rules", headers=bearer(flow_keys.writer))).json()
        assert mine["source"] == "default"
