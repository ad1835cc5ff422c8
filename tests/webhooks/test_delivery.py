"""Deliveries to a real receiver that verifies signatures with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from b2bscore.kit.state import AppState
from b2bscore.webhooks import service
from b2bscore.webhooks.models import WebhookEndpoint
from b2bscore.webhooks.urls import UnsafeUrl, check_url, resolve
from tests.receivers import Receiver, webhook_receiver
from tests.webhooks.conftest import FlowKeys, bearer

URL = "/v1/webhook-endpoints"


async def _endpoint(
    api: httpx.AsyncClient, key: str, url: str, types: list[str] | None = None
) -> dict[str, Any]:
    response = await api.post(
        URL, json={"url": url, "event_types": types or ["company.closed"]}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _emit(
    state: AppState, tenant_id: str, siren: str, n: int = 1, mode: str = "test"
) -> list[str]:
    """n company.closed events for siren, each in its own transaction, then dispatched."""
    ids: list[str] = []
    for _ in range(n):
        async with state.sessionmaker() as session:
            emitted = await service.emit_event(
                session,
                tenant_id=tenant_id,
                mode=mode,
                event_type="company.closed",
                ordering_key=siren,
                data={
                    "monitored_company_id": "m1",
                    "siren": siren,
                    "external_reference": None,
                    "detected_at": datetime.now(UTC),
                },
            )
            await session.commit()
        await service.dispatch(state.jobs, emitted)
        ids.extend(e.id for e in emitted.events)
    return ids


def _for(receiver: Receiver, ids: list[str]) -> list[str]:
    wanted = set(ids)
    return [r.headers["webhook-id"] for r in receiver.ok() if r.headers["webhook-id"] in wanted]


class TestDelivery:
    async def test_signed_body_verifies_with_standardwebhooks(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as receiver:
            endpoint = await _endpoint(flow_api, flow_keys.writer, receiver.url)
            receiver.secrets["current"] = endpoint["secret"]
            [event_id] = await _emit(flow_state, flow_keys.tenant_a, "732829320")
            await receiver.wait_for(lambda r: _for(r, [event_id]))
            got = next(r for r in receiver.ok() if r.headers["webhook-id"] == event_id)
            assert got.verified == {"current": True}
            assert set(got.payload) == {"type", "timestamp", "data"}
            assert got.payload["type"] == "company.closed"
            assert got.payload["data"]["siren"] == "732829320"
            assert got.headers["webhook-signature"].startswith("v1,")

    async def test_retries_5xx_and_keeps_order_per_company(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as receiver:
            endpoint = await _endpoint(flow_api, flow_keys.writer, receiver.url)
            receiver.secrets["current"] = endpoint["secret"]
            receiver.script.statuses = [500, 503]
            ids = await _emit(flow_state, flow_keys.tenant_a, "552100554", n=5)
            await receiver.wait_for(lambda r: len(_for(r, ids)) == 5)
            assert _for(receiver, ids) == ids  # in order, each exactly once
            assert all(r.verified["current"] for r in receiver.received)
            log = (
                await flow_api.get(
                    f"{URL}/{endpoint['id']}/deliveries", headers=bearer(flow_keys.writer)
                )
            ).json()["data"]
            first = next(d for d in log if d["event_id"] == ids[0])
            assert first["status"] == "succeeded"
            assert first["attempts"] == 3
            outcomes = [(a["outcome"], a["status_code"]) for a in first["attempt_log"]]
            assert outcomes == [("retry", 500), ("retry", 503), ("succeeded", 200)]
            assert len(first["attempt_log"][0]["response_excerpt"]) <= 1024

    async def test_4xx_is_not_retried_and_redeliver_sends_again(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as receiver:
            endpoint = await _endpoint(flow_api, flow_keys.writer, receiver.url)
            receiver.secrets["current"] = endpoint["secret"]
            receiver.script.statuses = [400]
            [event_id] = await _emit(flow_state, flow_keys.tenant_a, "542065479")
            deliveries_url = f"{URL}/{endpoint['id']}/deliveries"

            async def status() -> str:
                data = (await flow_api.get(deliveries_url, headers=bearer(flow_keys.writer))).json()
                mine = [d for d in data["data"] if d["event_id"] == event_id]
                return str(mine[0]["status"]) if mine else "none"

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if await status() == "failed":
                    break
                await asyncio.sleep(0.05)
            assert await status() == "failed"
            assert len(receiver.received) == 1
            delivery_id = (
                await flow_api.get(deliveries_url, headers=bearer(flow_keys.writer))
            ).json()["data"][0]["id"]
            response = await flow_api.post(
                f"{deliveries_url}/{delivery_id}/redeliver", headers=bearer(flow_keys.writer)
            )
            assert response.status_code == 202
            await receiver.wait_for(lambda r: _for(r, [event_id]))

    async def test_redirect_not_followed(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as receiver, webhook_receiver() as elsewhere:
            endpoint = await _endpoint(flow_api, flow_keys.writer, receiver.url)
            receiver.script.statuses = [302]
            receiver.script.location = elsewhere.url
            await _emit(flow_state, flow_keys.tenant_a, "383474814")
            await receiver.wait_for(lambda r: len(r.received) == 1)
            await asyncio.sleep(1.0)
            assert elsewhere.received == []
            log = (
                await flow_api.get(
                    f"{URL}/{endpoint['id']}/deliveries", headers=bearer(flow_keys.writer)
                )
            ).json()["data"]
            assert log[0]["attempt_log"][0]["error"] == "redirect not followed"

    async def test_timeout_is_retried(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as receiver:
            endpoint = await _endpoint(flow_api, flow_keys.writer, receiver.url)
            receiver.secrets["current"] = endpoint["secret"]
            receiver.script.delay_seconds = 1.5  # past the 1 s timeout of the tests
            [event_id] = await _emit(flow_state, flow_keys.tenant_a, "356000000")
            await receiver.wait_for(lambda r: len(r.received) >= 1)
            receiver.script.delay_seconds = 0
            await receiver.wait_for(lambda r: _for(r, [event_id]))
            log = (
                await flow_api.get(
                    f"{URL}/{endpoint['id']}/deliveries", headers=bearer(flow_keys.writer)
                )
            ).json()["data"]
            assert log[0]["attempt_log"][0]["error"] == "timeout"

    async def test_failing_endpoint_is_disabled_and_tenant_told(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as failing, webhook_receiver() as healthy:
            bad = await _endpoint(flow_api, flow_keys.other_tenant, failing.url, ["company.closed"])
            good = await _endpoint(
                flow_api, flow_keys.other_tenant, healthy.url, ["webhook_endpoint.disabled"]
            )
            healthy.secrets["good"] = good["secret"]
            failing.script.then = 500
            await _emit(flow_state, flow_keys.tenant_b, "810000000")
            # 4 attempts (the tests' max), then the endpoint is disabled.
            await healthy.wait_for(lambda r: len(r.ok()) == 1)
            told = healthy.ok()[0]
            assert told.verified == {"good": True}
            assert told.payload["type"] == "webhook_endpoint.disabled"
            assert told.payload["data"]["endpoint_id"] == bad["id"]
            assert len(failing.received) == 4
            read = (
                await flow_api.get(f"{URL}/{bad['id']}", headers=bearer(flow_keys.other_tenant))
            ).json()
            assert read["status"] == "disabled"
            assert "attempts failed" in read["disabled_reason"]
            # Disabled: a new event is recorded but not sent, until the endpoint is enabled.
            [later] = await _emit(flow_state, flow_keys.tenant_b, "810000000")
            await asyncio.sleep(0.5)
            assert len(failing.received) == 4
            failing.script.then = 200
            enabled = await flow_api.post(
                f"{URL}/{bad['id']}/enable", headers=bearer(flow_keys.other_tenant)
            )
            assert enabled.json()["status"] == "enabled"
            await failing.wait_for(lambda r: _for(r, [later]))

    async def test_rotation_signs_with_both_secrets_during_grace(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as receiver:
            endpoint = await _endpoint(flow_api, flow_keys.writer, receiver.url)
            rotated = (
                await flow_api.post(
                    f"{URL}/{endpoint['id']}/rotate-secret", headers=bearer(flow_keys.writer)
                )
            ).json()
            receiver.secrets = {"old": endpoint["secret"], "new": rotated["secret"]}
            [first] = await _emit(flow_state, flow_keys.tenant_a, "404833048")
            await receiver.wait_for(lambda r: _for(r, [first]))
            got = receiver.ok()[-1]
            assert got.verified == {"old": True, "new": True}
            assert len(got.headers["webhook-signature"].split(" ")) == 2
            # No grace: only the new secret signs.
            await flow_api.post(
                f"{URL}/{endpoint['id']}/rotate-secret",
                json={"grace_period_seconds": 0},
                headers=bearer(flow_keys.writer),
            )
            [second] = await _emit(flow_state, flow_keys.tenant_a, "404833048")
            await receiver.wait_for(lambda r: _for(r, [second]))
            assert receiver.ok()[-1].verified == {"old": False, "new": False}

    async def test_other_tenant_receives_nothing(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        with webhook_receiver() as mine, webhook_receiver() as theirs:
            await _endpoint(flow_api, flow_keys.writer, mine.url)
            await _endpoint(flow_api, flow_keys.other_tenant, theirs.url)
            ids = await _emit(flow_state, flow_keys.tenant_a, "443061841")
            await mine.wait_for(lambda r: _for(r, ids))
            await asyncio.sleep(0.3)
            assert _for(theirs, ids) == []


class TestSsrf:
    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.0.1/x",
            "https://169.254.169.254/x",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[fe80::1]/x",
            "https://[fc00::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://[2002:7f00:1::]/x",
            "http://93.184.215.14/x",
            "https://user:pw@93.184.215.14/x",
            "ftp://93.184.215.14/x",
        ],
    )
    def test_live_refuses(self, url: str) -> None:
        with pytest.raises(UnsafeUrl):
            check_url(url, "live")

    def test_test_mode_allows_local_http(self) -> None:
        assert check_url("http://127.0.0.1:8080/h", "test").host == "127.0.0.1"

    async def test_live_name_resolving_to_loopback_is_refused_at_delivery(self) -> None:
        # "localhost." passes no literal check; only the resolution shows it is loopback.
        with pytest.raises(UnsafeUrl):
            await resolve(httpx.URL("https://localhost./x"), "live")

    async def test_delivery_time_check_refuses_a_stored_live_loopback_url(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        # A live endpoint whose address turned private after registration (DNS change):
        # stored straight in the table, as registration would have refused it.
        with webhook_receiver() as receiver:
            endpoint = await _endpoint(flow_api, flow_keys.live, "https://93.184.215.14/h")
            https_local = receiver.url.replace("http://", "https://")
            async with flow_state.sessionmaker() as session:
                row = await session.get(WebhookEndpoint, endpoint["id"])
                assert row is not None
                row.url = https_local
                await session.commit()
            await _emit(flow_state, flow_keys.tenant_a, "326094471", mode="live")
            deliveries = f"{URL}/{endpoint['id']}/deliveries"
            deadline = time.monotonic() + 10
            log: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                log = (await flow_api.get(deliveries, headers=bearer(flow_keys.live))).json()[
                    "data"
                ]
                if log and log[0]["attempt_log"]:
                    break
                await asyncio.sleep(0.05)
            assert log[0]["attempt_log"][0]["error"].startswith("refused")
            assert receiver.received == []
