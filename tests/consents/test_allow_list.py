"""The tenant's redirect allow-list over HTTP: read by readers, changed by admin keys only."""

from __future__ import annotations

import os

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.kit.db import create_sessionmaker
from b2bscore.tenants import service as tenants
from tests.consents.conftest import Keys, bearer

NEW = "https://lender.example/consent-back"


@pytest.fixture(scope="module")
async def admin_keys(pg_engine: AsyncEngine) -> tuple[str, str, str]:
    """(test admin key, live admin key, test key of another tenant) of a fresh tenant."""
    async with create_sessionmaker(pg_engine)() as session:
        tenant = await tenants.create_tenant(session, f"allow-{os.urandom(3).hex()}")
        other = await tenants.create_tenant(session, f"allow-other-{os.urandom(3).hex()}")
        _, test_admin = await tenants.create_api_key(session, tenant, "test", ["admin"])
        _, live_admin = await tenants.create_api_key(session, tenant, "live", ["admin"])
        _, other_key = await tenants.create_api_key(
            session, other, "test", ["score:write", "decisions:read"]
        )
        await session.commit()
    return test_admin, live_admin, other_key


async def create(browser: httpx.AsyncClient, key: str, uri: str) -> httpx.Response:
    """POST /v1/consents asking to come back to uri."""
    return await browser.post(
        "/v1/consents",
        json={
            "siren": "552100554",
            "bank": "sandbox-stet14",
            "scopes": ["balances"],
            "redirect_uri": uri,
        },
        headers=bearer(key),
    )


class TestAllowList:
    """Allow, use, list, remove; per tenant and mode; bad URIs named."""

    async def test_allow_then_consent_then_remove(
        self, browser: httpx.AsyncClient, admin_keys: tuple[str, str, str]
    ) -> None:
        admin, _, other = admin_keys
        refused = await create(browser, admin, NEW)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "redirect_uri"

        allowed = await browser.post(
            "/v1/consents/redirect-uris", json={"uri": NEW}, headers=bearer(admin)
        )
        assert allowed.status_code == 201
        assert allowed.json()["uri"] == NEW
        listed = await browser.get("/v1/consents/redirect-uris", headers=bearer(admin))
        assert [r["uri"] for r in listed.json()["items"]] == [NEW]
        assert (await create(browser, admin, NEW)).status_code == 201
        # Another tenant's list and consents are untouched.
        theirs = await browser.get("/v1/consents/redirect-uris", headers=bearer(other))
        assert NEW not in [r["uri"] for r in theirs.json()["items"]]
        assert (await create(browser, other, NEW)).status_code == 422

        removed = await browser.delete(
            "/v1/consents/redirect-uris", params={"uri": NEW}, headers=bearer(admin)
        )
        assert removed.status_code == 204
        assert (await create(browser, admin, NEW)).status_code == 422
        again = await browser.delete(
            "/v1/consents/redirect-uris", params={"uri": NEW}, headers=bearer(admin)
        )
        assert again.status_code == 404

    async def test_only_admin_keys_change_it(self, browser: httpx.AsyncClient, keys: Keys) -> None:
        r = await browser.post(
            "/v1/consents/redirect-uris", json={"uri": NEW}, headers=bearer(keys.writer)
        )
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        d = await browser.delete(
            "/v1/consents/redirect-uris", params={"uri": NEW}, headers=bearer(keys.writer)
        )
        assert d.status_code == 403
        assert (await browser.get("/v1/consents/redirect-uris")).status_code == 401

    @pytest.mark.parametrize(
        ("live", "uri", "message"),
        [
            (False, "ftp://lender.example/x", "absolute http(s) URL"),
            (False, "https://lender.example/x#frag", "absolute http(s) URL"),
            (True, "http://lender.example/back", "https"),
        ],
    )
    async def test_bad_uris_are_422_naming_uri_and_nothing_is_written(
        self,
        browser: httpx.AsyncClient,
        admin_keys: tuple[str, str, str],
        live: bool,
        uri: str,
        message: str,
    ) -> None:
        key = admin_keys[1] if live else admin_keys[0]
        r = await browser.post("/v1/consents/redirect-uris", json={"uri": uri}, headers=bearer(key))
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == "uri"
        assert message in r.json()["errors"][0]["message"]
        listed = await browser.get("/v1/consents/redirect-uris", headers=bearer(key))
        assert uri not in [item["uri"] for item in listed.json()["items"]]

    async def test_a_live_key_sees_and_changes_the_live_list_only(
        self, browser: httpx.AsyncClient, admin_keys: tuple[str, str, str]
    ) -> None:
        test_admin, live_admin, _ = admin_keys
        uri = "https://lender.example/live-back"
        r = await browser.post(
            "/v1/consents/redirect-uris", json={"uri": uri}, headers=bearer(live_admin)
        )
        assert r.status_code == 201
        live = await browser.get("/v1/consents/redirect-uris", headers=bearer(live_admin))
        test = await browser.get("/v1/consents/redirect-uris", headers=bearer(test_admin))
        assert uri in [i["uri"] for i in live.json()["items"]]
        assert uri not in [i["uri"] for i in test.json()["items"]]
