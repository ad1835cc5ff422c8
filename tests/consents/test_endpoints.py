"""One class per /v1/consents endpoint: 401, 403, 404 (another tenant's consent), valid."""

from __future__ import annotations

import httpx
import pytest

from tests.consents.conftest import LENDER, NO_CONSENT, Keys, ask, bearer

pytestmark = pytest.mark.usefixtures("keys")


class TestPostConsents:
    """POST /v1/consents."""

    async def test_401_without_a_key(self, browser: httpx.AsyncClient) -> None:
        r = await browser.post("/v1/consents", json={})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"

    async def test_403_without_score_write(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        body = {
            "siren": NO_CONSENT,
            "bank": "sandbox-stet14",
            "scopes": ["balances"],
            "redirect_uri": LENDER,
        }
        r = await browser.post("/v1/consents", json=body, headers=bearer(keys.reader_only))
        assert r.status_code == 403

    async def test_valid(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        created = await ask(browser, keys.writer, scopes=("transactions", "balances"))
        assert created["status"] == "pending"
        assert created["requested_scopes"] == ["balances", "transactions"]
        assert created["scopes"] == []
        assert created["authorization_url"].startswith("http://127.0.0.1:")
        assert "/oauth/sandbox-stet14/authorize?" in created["authorization_url"]

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"bank": "no-such-bank"}, "bank"),
            ({"bank": "bpce-caisse-epargne-ile-de-france"}, "bank"),  # a live bank, test key
            ({"redirect_uri": "https://not-allowed.example/back"}, "redirect_uri"),
            ({"siren": "123456789"}, "siren"),
            ({"scopes": ["payments"]}, "scopes"),
        ],
    )
    async def test_422_names_the_field(
        self, browser: httpx.AsyncClient, keys: Keys, change: dict[str, object], field: str
    ) -> None:
        body = {
            "siren": NO_CONSENT,
            "bank": "sandbox-stet14",
            "scopes": ["balances"],
            "redirect_uri": LENDER,
            **change,
        }
        r = await browser.post("/v1/consents", json=body, headers=bearer(keys.writer))
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert field in {e["field"].split(".")[0] for e in r.json()["errors"]}


class TestGetConsent:
    """GET /v1/consents/{id}."""

    async def test_401(self, browser: httpx.AsyncClient) -> None:
        assert (await browser.get("/v1/consents/x")).status_code == 401

    async def test_403_without_decisions_read(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        created = await ask(browser, keys.writer)
        r = await browser.get(f"/v1/consents/{created['id']}", headers=bearer(keys.no_read))
        assert r.status_code == 403

    async def test_404_for_another_tenant_or_mode(
        self, browser: httpx.AsyncClient, keys: Keys
    ) -> None:
        created = await ask(browser, keys.writer)
        for key in (keys.other_tenant, keys.live):
            r = await browser.get(f"/v1/consents/{created['id']}", headers=bearer(key))
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/problem+json"

    async def test_valid(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        created = await ask(browser, keys.writer)
        r = await browser.get(f"/v1/consents/{created['id']}", headers=bearer(keys.reader_only))
        assert r.status_code == 200
        assert r.json()["status"] == "pending"
        assert "authorization_url" not in r.json()


class TestListConsents:
    """GET /v1/consents."""

    async def test_401(self, browser: httpx.AsyncClient) -> None:
        assert (await browser.get("/v1/consents")).status_code == 401

    async def test_403(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        assert (await browser.get("/v1/consents", headers=bearer(keys.no_read))).status_code == 403

    async def test_valid_lists_only_the_tenants_own(
        self, browser: httpx.AsyncClient, keys: Keys
    ) -> None:
        mine = await ask(browser, keys.writer)
        theirs = await ask(browser, keys.other_tenant)
        r = await browser.get("/v1/consents?limit=100", headers=bearer(keys.writer))
        assert r.status_code == 200
        ids = {c["id"] for c in r.json()["items"]}
        assert mine["id"] in ids
        assert theirs["id"] not in ids

    async def test_cursor_pages_and_bad_cursor(
        self, browser: httpx.AsyncClient, keys: Keys
    ) -> None:
        await ask(browser, keys.writer)
        await ask(browser, keys.writer)
        first = (await browser.get("/v1/consents?limit=1", headers=bearer(keys.writer))).json()
        assert first["next_cursor"]
        second = (
            await browser.get(
                f"/v1/consents?limit=1&cursor={first['next_cursor']}", headers=bearer(keys.writer)
            )
        ).json()
        assert second["items"][0]["id"] != first["items"][0]["id"]
        r = await browser.get("/v1/consents?cursor=%%%", headers=bearer(keys.writer))
        assert r.status_code == 422


class TestSyncConsent:
    """POST /v1/consents/{id}/sync."""

    async def test_401(self, browser: httpx.AsyncClient) -> None:
        assert (await browser.post("/v1/consents/x/sync")).status_code == 401

    async def test_403(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        r = await browser.post("/v1/consents/x/sync", headers=bearer(keys.reader_only))
        assert r.status_code == 403

    async def test_404_for_another_tenant(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        created = await ask(browser, keys.writer)
        r = await browser.post(
            f"/v1/consents/{created['id']}/sync", headers=bearer(keys.other_tenant)
        )
        assert r.status_code == 404

    async def test_409_when_not_active(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        created = await ask(browser, keys.writer)
        r = await browser.post(f"/v1/consents/{created['id']}/sync", headers=bearer(keys.writer))
        assert r.status_code == 409
        assert r.json()["code"] == "consent_not_active"


class TestDeleteConsent:
    """DELETE /v1/consents/{id}."""

    async def test_401(self, browser: httpx.AsyncClient) -> None:
        assert (await browser.delete("/v1/consents/x")).status_code == 401

    async def test_403(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        r = await browser.delete("/v1/consents/x", headers=bearer(keys.reader_only))
        assert r.status_code == 403

    async def test_404_for_another_tenant(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        created = await ask(browser, keys.writer)
        r = await browser.delete(f"/v1/consents/{created['id']}", headers=bearer(keys.other_tenant))
        assert r.status_code == 404
        r = await browser.get(f"/v1/consents/{created['id']}", headers=bearer(keys.writer))
        assert r.json()["status"] == "pending"

    async def test_valid_revokes_a_pending_consent(
        self, browser: httpx.AsyncClient, keys: Keys
    ) -> None:
        created = await ask(browser, keys.writer)
        r = await browser.delete(f"/v1/consents/{created['id']}", headers=bearer(keys.writer))
        assert r.status_code == 200
        assert r.json()["status"] == "revoked"
