"""/v1/webhook-endpoints: one class per endpoint (401, 403, 404, the valid case)."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from b2bscore.kit.state import AppState
from b2bscore.webhooks.models import WebhookEndpoint
from tests.webhooks.conftest import FlowKeys, bearer

URL = "/v1/webhook-endpoints"


async def _create(
    api: httpx.AsyncClient, key: str, url: str = "http://127.0.0.1:9/h"
) -> httpx.Response:
    return await api.post(
        URL, json={"url": url, "event_types": ["company.closed"]}, headers=bearer(key)
    )


class TestCreateEndpoint:
    async def test_401_without_key(self, flow_api: httpx.AsyncClient) -> None:
        response = await flow_api.post(URL, json={"url": "http://x", "event_types": ["*"]})
        assert response.status_code == 401

    async def test_403_without_write_scope(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        assert (await _create(flow_api, flow_keys.reader_only)).status_code == 403

    async def test_valid_returns_secret_stored_encrypted(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys, flow_state: AppState
    ) -> None:
        response = await _create(flow_api, flow_keys.writer)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["secret"].startswith("whsec_")
        assert body["status"] == "enabled"
        assert body["mode"] == "test"
        async with flow_state.sessionmaker() as session:
            row = await session.scalar(
                select(WebhookEndpoint).where(WebhookEndpoint.id == body["id"])
            )
        assert row is not None
        secret_bytes = body["secret"].encode()
        assert secret_bytes not in row.secret_ciphertext
        assert secret_bytes[6:] not in row.secret_ciphertext

    async def test_unknown_event_type_is_422_naming_the_field(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        response = await flow_api.post(
            URL,
            json={"url": "http://127.0.0.1/h", "event_types": ["nope"]},
            headers=bearer(flow_keys.writer),
        )
        assert response.status_code == 422
        assert "event_types" in response.text

    async def test_live_refuses_http_and_private_addresses(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        for url in (
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://10.0.0.8/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://[::ffff:192.168.1.1]/x",
            "https://localhost/x",
        ):
            response = await _create(flow_api, flow_keys.live, url)
            assert response.status_code == 422, url
            assert response.json()["errors"][0]["field"] == "url"

    async def test_live_accepts_public_https(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        response = await _create(flow_api, flow_keys.live, "https://93.184.215.14/hooks")
        assert response.status_code == 201, response.text
        assert response.json()["mode"] == "live"


class TestListEndpoints:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.get(URL)).status_code == 401

    async def test_403_without_read_scope(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        assert (await flow_api.get(URL, headers=bearer(flow_keys.writer_only))).status_code == 403

    async def test_valid_lists_only_own_tenant_and_mode(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        mine = (await _create(flow_api, flow_keys.writer)).json()["id"]
        theirs = (await _create(flow_api, flow_keys.other_tenant)).json()["id"]
        listed = (await flow_api.get(URL, headers=bearer(flow_keys.writer))).json()["data"]
        ids = {e["id"] for e in listed}
        assert mine in ids
        assert theirs not in ids
        assert all(e["mode"] == "test" for e in listed)
        assert all("secret" not in e for e in listed)


class TestReadEndpoint:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.get(f"{URL}/x")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.get(f"{URL}/{eid}", headers=bearer(flow_keys.writer_only))
        assert response.status_code == 403

    async def test_404_for_other_tenant_and_other_mode(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        for key in (flow_keys.other_tenant, flow_keys.live):
            response = await flow_api.get(f"{URL}/{eid}", headers=bearer(key))
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"

    async def test_valid(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        body = (await flow_api.get(f"{URL}/{eid}", headers=bearer(flow_keys.writer))).json()
        assert body["id"] == eid
        assert body["event_types"] == ["company.closed"]


class TestDeleteEndpoint:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.delete(f"{URL}/x")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.delete(f"{URL}/{eid}", headers=bearer(flow_keys.reader_only))
        assert response.status_code == 403

    async def test_404_other_tenant(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.delete(f"{URL}/{eid}", headers=bearer(flow_keys.other_tenant))
        assert response.status_code == 404
        assert (
            await flow_api.get(f"{URL}/{eid}", headers=bearer(flow_keys.writer))
        ).status_code == 200

    async def test_valid(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.delete(f"{URL}/{eid}", headers=bearer(flow_keys.writer))
        assert response.status_code == 204
        assert (
            await flow_api.get(f"{URL}/{eid}", headers=bearer(flow_keys.writer))
        ).status_code == 404


class TestRotateSecret:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.post(f"{URL}/x/rotate-secret")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.post(
            f"{URL}/{eid}/rotate-secret", headers=bearer(flow_keys.reader_only)
        )
        assert response.status_code == 403

    async def test_404(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.post(
            f"{URL}/{eid}/rotate-secret", headers=bearer(flow_keys.other_tenant)
        )
        assert response.status_code == 404

    async def test_valid_new_secret_with_grace(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        created = (await _create(flow_api, flow_keys.writer)).json()
        response = await flow_api.post(
            f"{URL}/{created['id']}/rotate-secret",
            json={"grace_period_seconds": 3600},
            headers=bearer(flow_keys.writer),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["secret"].startswith("whsec_")
        assert body["secret"] != created["secret"]
        assert body["previous_secret_expires_at"] is not None


class TestDeliveries:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.get(f"{URL}/x/deliveries")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.get(
            f"{URL}/{eid}/deliveries", headers=bearer(flow_keys.writer_only)
        )
        assert response.status_code == 403

    async def test_404(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.get(
            f"{URL}/{eid}/deliveries", headers=bearer(flow_keys.other_tenant)
        )
        assert response.status_code == 404

    async def test_valid_empty(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.get(f"{URL}/{eid}/deliveries", headers=bearer(flow_keys.writer))
        assert response.status_code == 200
        assert response.json() == {"data": []}


class TestRedeliver:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.post(f"{URL}/x/deliveries/y/redeliver")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        response = await flow_api.post(
            f"{URL}/x/deliveries/y/redeliver", headers=bearer(flow_keys.reader_only)
        )
        assert response.status_code == 403

    async def test_404_unknown_delivery(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        eid = (await _create(flow_api, flow_keys.writer)).json()["id"]
        response = await flow_api.post(
            f"{URL}/{eid}/deliveries/nope/redeliver", headers=bearer(flow_keys.writer)
        )
        assert response.status_code == 404
