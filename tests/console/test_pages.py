"""The console without a browser: sessions, CSRF, escaping, the CSP and the scoring path."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.consents.models import Consent
from b2bscore.console.endpoints import CONTENT_SECURITY_POLICY
from b2bscore.decisions.models import Decision
from b2bscore.kit.db import create_sessionmaker
from b2bscore.portfolio.models import MonitoredCompany
from b2bscore.tenants import service as tenants
from b2bscore.webhooks import service as webhooks
from b2bscore.webhooks.models import WebhookDelivery
from b2bscore.webhooks.schemas import EndpointCreate
from tests.console.conftest import ConsoleKeys, hidden_fields, signed_in
from tests.decisions.factories import make_record
from tests.security.conftest import tamper

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


async def _decisions_of(engine: AsyncEngine, tenant_id: str) -> int:
    async with engine.connect() as connection:
        statement = (
            select(func.count()).select_from(Decision).where(Decision.tenant_id == tenant_id)
        )
        return int((await connection.execute(statement)).scalar_one())


def _set_cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    raise AssertionError(f"no Set-Cookie for {name}")


def _assert_strict_page(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in csp
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert not _INLINE_SCRIPT.search(html), "inline script"
    assert " style=" not in html, "inline style attribute"
    assert "<style" not in html, "inline style element"
    assert "https://" not in html.replace("https://b2bscore.dev", ""), "external resource"


class TestSignIn:
    """GET/POST /console/sign-in."""

    async def test_the_page_is_strict(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/console/sign-in")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert '<label for="api_key">API key</label>' in page.text

    async def test_a_valid_key_opens_a_session_with_strict_cookie_flags(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        page = await client.get("/console/sign-in")
        form = {**hidden_fields(page.text), "api_key": console_keys.writer}
        answer = await client.post("/console/sign-in", data=form)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/score"
        cookie = _set_cookie(answer, "b2b_console")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/console" in cookie
        assert "Secure" not in cookie  # a test key on plain HTTP (localhost)
        max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
        assert 0 < max_age <= 3600
        # The key itself is never echoed: not in the cookie, not in the page.
        assert console_keys.writer not in cookie
        score_page = await client.get("/console/score")
        assert score_page.status_code == 200
        assert console_keys.writer not in score_page.text
        assert 'data-testid="test-banner"' in score_page.text

    async def test_a_live_key_gets_a_secure_cookie_and_no_test_banner(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        page = await client.get("/console/sign-in")
        form = {**hidden_fields(page.text), "api_key": console_keys.live}
        answer = await client.post("/console/sign-in", data=form)
        cookie = _set_cookie(answer, "b2b_console")
        assert "Secure" in cookie
        session_id = cookie.split(";")[0].split("=", 1)[1]
        # httpx keeps Secure cookies for https only: send it by hand to read the page.
        score_page = await client.get(
            "/console/score", headers={"Cookie": f"b2b_console={session_id}"}
        )
        assert score_page.status_code == 200
        assert "test-banner" not in score_page.text
        assert "badge-live" in score_page.text

    async def test_a_bad_key_is_refused_next_to_the_field(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/console/sign-in")
        form = {**hidden_fields(page.text), "api_key": "sk_test_" + "x" * 40}
        answer = await client.post("/console/sign-in", data=form)
        assert answer.status_code == 200
        assert 'id="api_key_error"' in answer.text
        assert "invalid, revoked or expired" in answer.text
        assert "b2b_console=" not in " ".join(answer.headers.get_list("set-cookie"))

    @pytest.mark.parametrize("token", [None, "wrong"])
    async def test_without_its_csrf_token_the_form_is_refused(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, token: str | None
    ) -> None:
        await client.get("/console/sign-in")
        form = {"api_key": console_keys.writer}
        if token is not None:
            form["csrf_token"] = token
        answer = await client.post("/console/sign-in", data=form)
        assert answer.status_code == 403
        assert "b2b_console=" not in " ".join(answer.headers.get_list("set-cookie"))


class TestSession:
    """Expiry, sign-out and revocation of console sessions."""

    async def test_signed_out_pages_redirect_to_sign_in(self, client: httpx.AsyncClient) -> None:
        for path in ("/console/score", "/console/decisions", "/console/operations"):
            answer = await client.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/console/sign-in?")

    async def test_the_session_lives_in_the_cache_with_a_ttl_and_ends_with_it(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, redis_url: str
    ) -> None:
        await signed_in(client, console_keys.writer)
        session_id = client.cookies["b2b_console"]
        cache_key = "console:session:" + hashlib.sha256(session_id.encode()).hexdigest()
        store = aioredis.Redis.from_url(redis_url)
        try:
            stored = await store.get(cache_key)
            assert stored is not None
            assert console_keys.writer.encode() not in stored  # never the key itself
            ttl = await store.pttl(cache_key)
            assert 0 < ttl <= 3_600_000
            await store.pexpire(cache_key, 1)  # the cache's own expiry, brought forward
            await asyncio.sleep(0.05)
            assert await store.exists(cache_key) == 0
        finally:
            await store.aclose()
        answer = await client.get("/console/score")
        assert answer.status_code == 303
        assert "ended=1" in answer.headers["location"]

    async def test_sign_out_forgets_the_session_server_side(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        token = await signed_in(client, console_keys.writer)
        session_id = client.cookies["b2b_console"]
        answer = await client.post("/console/sign-out", data={"csrf_token": token})
        assert answer.status_code == 303
        assert "b2b_console=" in _set_cookie(answer, "b2b_console")
        assert "Max-Age=0" in _set_cookie(answer, "b2b_console")
        # The old cookie value opens nothing any more.
        replayed = await client.get(
            "/console/score", headers={"Cookie": f"b2b_console={session_id}"}
        )
        assert replayed.status_code == 303

    async def test_sign_out_without_csrf_is_refused_and_the_session_stays(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        await signed_in(client, console_keys.writer)
        answer = await client.post("/console/sign-out", data={"csrf_token": "forged"})
        assert answer.status_code == 403
        assert (await client.get("/console/score")).status_code == 200

    async def test_revoking_the_key_ends_its_sessions(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        async with create_sessionmaker(pg_engine)() as session:
            tenant = await tenants.create_tenant(session, console_keys.tenant_name)
            row, key = await tenants.create_api_key(session, tenant, "test", ["decisions:read"])
            await session.commit()
        await signed_in(client, key)
        assert (await client.get("/console/decisions")).status_code == 200
        async with create_sessionmaker(pg_engine)() as session:
            await tenants.revoke_api_key(session, row.id)
            await session.commit()
        assert (await client.get("/console/decisions")).status_code == 303


class TestScore:
    """GET/POST /console/score."""

    async def test_csrf_is_checked_and_nothing_is_decided_without_it(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        await signed_in(client, console_keys.writer)
        before = await _decisions_of(pg_engine, console_keys.tenant_id)
        form = {"siren": "111111118", "amount": "25000", "product": "term_loan"}
        for token in ({}, {"csrf_token": "forged"}):
            answer = await client.post("/console/score", data={**form, **token})
            assert answer.status_code == 403
            assert "did not come from this console" in answer.text
        assert await _decisions_of(pg_engine, console_keys.tenant_id) == before

    async def test_field_errors_are_the_apis_own_messages(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        token = await signed_in(client, console_keys.writer)
        page = await client.post(
            "/console/score",
            data={"csrf_token": token, "siren": "123456789", "amount": "12.345", "product": "x"},
        )
        assert page.status_code == 200
        api = await client.post(
            "/v1/score",
            json={"siren": "123456789", "requested_amount": "12.345", "product": "x"},
            headers={"Authorization": f"Bearer {console_keys.writer}"},
        )
        assert api.status_code == 422
        messages = {e["field"]: e["message"] for e in api.json()["errors"]}
        for form_field, api_field in (
            ("siren", "siren"),
            ("amount", "requested_amount"),
            ("product", "product"),
        ):
            error = re.search(rf'id="{form_field}_error"[^>]*>([^<]*)</p>', page.text)
            assert error is not None, form_field
            expected = messages[api_field].replace("'", "&#39;").replace('"', "&#34;")
            assert error.group(1) == expected

    async def test_a_score_is_recorded_once_per_form(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        token = await signed_in(client, console_keys.writer)
        before = await _decisions_of(pg_engine, console_keys.tenant_id)
        form = {
            "csrf_token": token,
            "idempotency_key": str(uuid.uuid4()),
            "siren": "111 111 118",
            "amount": "25000",
            "product": "term_loan",
        }
        first = await client.post("/console/score", data=form)
        second = await client.post("/console/score", data=form)  # a double submit
        ids = [re.search(r'/console/decisions/([0-9a-f-]{36})"', r.text) for r in (first, second)]
        assert ids[0] is not None
        assert ids[1] is not None
        assert ids[0].group(1) == ids[1].group(1)
        assert await _decisions_of(pg_engine, console_keys.tenant_id) == before + 1
        assert 'data-testid="decision"' in first.text
        assert "Approve" in first.text

    async def test_console_scores_count_against_the_keys_rate_limit(
        self, client: httpx.AsyncClient, pg_engine: AsyncEngine
    ) -> None:
        async with create_sessionmaker(pg_engine)() as session:
            tenant = await tenants.create_tenant(session, f"console-limited-{uuid.uuid4().hex[:6]}")
            _, key = await tenants.create_api_key(session, tenant, "test", ["score:write"])
            await tenants.set_rate_limit(session, tenant.id, 2)
            await session.commit()
        page = await client.get("/console/sign-in")
        answer = await client.post(
            "/console/sign-in", data={**hidden_fields(page.text), "api_key": key}
        )
        assert answer.status_code == 303
        token = hidden_fields((await client.get("/console/score")).text)["csrf_token"]
        form = {"csrf_token": token, "siren": "111111118", "amount": "1000", "product": "bnpl"}
        pages = [
            await client.post("/console/score", data={**form, "idempotency_key": str(uuid.uuid4())})
            for _ in range(3)
        ]
        assert all('data-testid="result"' in p.text for p in pages[:2])
        assert 'data-testid="result"' not in pages[2].text
        assert "Too many requests" in pages[2].text
        assert "2 test requests per minute" in pages[2].text

    async def test_a_key_without_score_write_gets_403(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        await signed_in(client, console_keys.reader_only)
        page = await client.get("/console/score")
        assert page.status_code == 403
        assert "score:write" in page.text


class TestDecision:
    """GET /console/decisions/{id} and its replay."""

    async def test_another_tenants_decision_is_not_found(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, console_app: FastAPI
    ) -> None:
        row = await console_app.state.b2b.audit.record(make_record(console_keys.tenant_id))
        await signed_in(client, console_keys.other_tenant)
        page = await client.get(f"/console/decisions/{row.id}")
        assert page.status_code == 404
        assert row.siren not in page.text

    async def test_provider_strings_are_escaped_and_tampering_shows(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, console_app: FastAPI
    ) -> None:
        hostile = "<script>alert(1)</script>"
        record = make_record(
            console_keys.tenant_id,
            reasons=[
                {
                    "code": "LIQUIDITY",
                    "family": "liquidity",
                    "direction": "adverse",
                    "contribution": 0.5,
                    "feature": "cash_ratio",
                    "value": 0.1,
                    "label_fr": hostile,
                    "label_en": hostile,
                }
            ],
            sources={
                "registry": {
                    "status": "error",
                    "latency_ms": 3.0,
                    "as_of": None,
                    "detail": '<img src=x onerror="alert(2)">',
                }
            },
            proposed_limit=Decimal("1000.00"),
        )
        row = await console_app.state.b2b.audit.record(record)
        token = await signed_in(client, console_keys.writer)
        page = await client.get(f"/console/decisions/{row.id}")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert hostile not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<img src=x" not in page.text
        assert "&lt;b&gt;Acme&lt;/b&gt;" in page.text  # the tenant name, as text
        assert 'data-testid="row-hash-check"' in page.text
        assert "Verified: the row" in page.text
        # The model that "decided" this record does not exist: replay says so, politely.
        replay = await client.post(
            f"/console/decisions/{row.id}/replay", data={"csrf_token": token}
        )
        assert replay.status_code == 200
        assert "Replay not possible" in replay.text
        refused = await client.post(f"/console/decisions/{row.id}/replay", data={})
        assert refused.status_code == 403

        settings = console_app.state.b2b.settings
        original = row.score
        await tamper(
            settings.resolved_database_url, "UPDATE decisions SET score = 1 WHERE id = $1", row.id
        )
        try:
            tampered = await client.get(f"/console/decisions/{row.id}")
            assert "Tampered: the row" in tampered.text
        finally:
            await tamper(
                settings.resolved_database_url,
                "UPDATE decisions SET score = $2 WHERE id = $1",
                row.id,
                original,
            )
        assert "Verified: the row" in (await client.get(f"/console/decisions/{row.id}")).text


class TestStatic:
    """GET /console/static/{name}."""

    async def test_only_packaged_files_are_served(self, client: httpx.AsyncClient) -> None:
        css = await client.get("/console/static/console.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert (await client.get("/console/static/vendor/htmx-2.0.11.min.js")).status_code == 200
        for name in ("../endpoints.py", "..%2Fendpoints.py", "templates/base.html"):
            assert (await client.get(f"/console/static/{name}")).status_code == 404


class TestDecisionsList:
    """GET /console/decisions: filters and keyset pages."""

    async def test_pages_filters_and_modes(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, console_app: FastAPI
    ) -> None:
        audit = console_app.state.b2b.audit
        tenant = console_keys.other_tenant_id
        for i in range(27):
            await audit.record(make_record(tenant, siren="732829320", grade="B" if i % 2 else "C"))
        await audit.record(make_record(tenant, mode="live", siren="552100554"))
        await signed_in(client, console_keys.other_tenant)

        first = await client.get("/console/decisions?siren=732+829+320")
        ids_first = re.findall(r'href="/console/decisions/([0-9a-f-]{36})"', first.text)
        assert len(ids_first) == 25
        following = re.search(r'href="(/console/decisions\?[^"]*before=\d+[^"]*)"', first.text)
        assert following is not None
        second = await client.get(following.group(1).replace("&amp;", "&"))
        ids_second = re.findall(r'href="/console/decisions/([0-9a-f-]{36})"', second.text)
        assert len(ids_second) == 2
        assert not set(ids_first) & set(ids_second)
        assert 'data-testid="next-page"' not in second.text

        graded = await client.get("/console/decisions?grade=B&siren=732829320")
        assert len(re.findall(r'href="/console/decisions/[0-9a-f-]{36}"', graded.text)) == 13
        # A test key never sees live decisions.
        assert "552100554" not in (await client.get("/console/decisions")).text

        today = datetime.now(UTC).date()
        dated = await client.get(f"/console/decisions?from={today}&to={today}")
        assert "732829320" in dated.text
        future = today + timedelta(days=2)
        assert (
            'data-testid="no-decisions"'
            in (await client.get(f"/console/decisions?from={future}")).text
        )
        reversed_range = await client.get(f"/console/decisions?from={future}&to={today}")
        assert 'data-testid="from-error"' in reversed_range.text
        assert "must not be after the end date" in reversed_range.text


class TestFormBodies:
    """The JSON-only guard lets HTML forms through to /console/ only."""

    async def test_a_form_body_is_still_refused_by_the_api(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        answer = await client.post(
            "/v1/score",
            data={"siren": "111111118", "requested_amount": "1000", "product": "bnpl"},
            headers={"Authorization": f"Bearer {console_keys.writer}"},
        )
        assert answer.status_code == 415
        assert answer.headers["content-type"].startswith("application/problem+json")


class TestModels:
    """GET /console/models: the registry and the serving bundle's drift, for operators."""

    async def test_signed_out_goes_to_sign_in(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/console/models")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/sign-in?")

    async def test_a_key_without_admin_gets_403_and_no_link(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        await signed_in(client, console_keys.writer)
        page = await client.get("/console/models")
        assert page.status_code == 403
        assert "admin" in page.text
        assert 'href="/console/models"' not in (await client.get("/console/decisions")).text

    async def test_bundles_roles_and_drift_in_both_languages(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, console_app: FastAPI
    ) -> None:
        await signed_in(client, console_keys.other_tenant)
        page = await client.get("/console/models?window=24h&lang=en")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert 'href="/console/models"' in page.text
        serving = console_app.state.b2b.bundle
        assert serving.model_id in page.text
        assert 'data-role="live"' in page.text
        assert "watch from 0.10, act from 0.25" in page.text
        # The shipped bundles carry a drift reference: the score row and every feature show.
        assert 'data-testid="drift"' in page.text
        assert serving.reference is not None
        for name in serving.reference.features:
            assert f'<th scope="row" class="code">{name}</th>' in page.text
        french = await client.get("/console/models?lang=fr")
        assert "surveiller dès 0,10, agir dès 0,25" in french.text
        assert "Dérive du modèle servi" in french.text

    async def test_an_unknown_window_falls_back_to_seven_days(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys
    ) -> None:
        await signed_in(client, console_keys.other_tenant)
        # The platform's page and the tenant's own (an admin key may read both).
        for path in ("/console/models", "/console/model"):
            page = await client.get(f"{path}?window=<script>")
            assert page.status_code == 200
            assert "<script>" not in page.text.replace('<script src="', "")
            assert re.search(r'<option value="7d" selected>', page.text)


async def _endpoint_with_failed_delivery(
    engine: AsyncEngine, app: FastAPI, tenant_id: str
) -> tuple[str, str]:
    """A test-mode endpoint of tenant_id and one delivery that gave up: (endpoint, delivery)."""
    async with create_sessionmaker(engine)() as session:
        endpoint, _ = await webhooks.create_endpoint(
            session,
            app.state.b2b.keyring,
            tenant_id=tenant_id,
            mode="test",
            body=EndpointCreate(
                url="http://127.0.0.1:9/hook",
                event_types=["company.closed"],
                description="<i>x</i>",
            ),
            max_endpoints=1000,
        )
        await webhooks.emit_event(
            session,
            tenant_id=tenant_id,
            mode="test",
            event_type="company.closed",
            ordering_key="405123456",
            data={
                "monitored_company_id": "m",
                "siren": "405123456",
                "external_reference": None,
                "detected_at": datetime.now(UTC),
            },
        )
        await session.flush()
        delivery = await session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        )
        assert delivery is not None
        delivery.status, delivery.attempts = "failed", 15
        await session.commit()
        return endpoint.id, delivery.id


class TestWebhooks:
    """GET /console/webhooks, an endpoint's deliveries and its Redeliver button."""

    async def test_signed_out_goes_to_sign_in(self, client: httpx.AsyncClient) -> None:
        for path in ("/console/webhooks", "/console/webhooks/x"):
            page = await client.get(path)
            assert page.status_code == 303
        page = await client.post("/console/webhooks/x/deliveries/y/redeliver", data={})
        assert page.status_code == 303

    async def test_endpoints_deliveries_and_redeliver(
        self,
        client: httpx.AsyncClient,
        console_keys: ConsoleKeys,
        console_app: FastAPI,
        pg_engine: AsyncEngine,
    ) -> None:
        endpoint_id, delivery_id = await _endpoint_with_failed_delivery(
            pg_engine, console_app, console_keys.tenant_id
        )
        csrf = await signed_in(client, console_keys.writer)
        listing = await client.get("/console/webhooks?lang=fr")
        assert listing.status_code == 200
        _assert_strict_page(listing)
        assert f'href="/console/webhooks/{endpoint_id}"' in listing.text
        assert "&lt;i&gt;x&lt;/i&gt;" in listing.text
        assert "<i>x</i>" not in listing.text
        assert "Points de terminaison webhook" in listing.text
        page = await client.get(f"/console/webhooks/{endpoint_id}?lang=en")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert f'data-delivery="{delivery_id}"' in page.text
        assert "company.closed" in page.text
        assert "failed" in page.text
        action = f"/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"
        assert f'action="{action}"' in page.text
        refused = await client.post(action, data={})
        assert refused.status_code == 403
        async with create_sessionmaker(pg_engine)() as session:
            row = await session.get(WebhookDelivery, delivery_id)
            assert row is not None
            assert row.status == "failed"
        done = await client.post(action, data={"csrf_token": csrf})
        assert done.status_code == 200
        assert 'data-testid="notice"' in done.text
        async with create_sessionmaker(pg_engine)() as session:
            row = await session.get(WebhookDelivery, delivery_id)
            # Reset for a new round (a worker may already have made its first attempt).
            assert row is not None
            assert row.attempts < 15
        assert (
            await client.post(action.replace(delivery_id, "nope"), data={"csrf_token": csrf})
        ).status_code == 404

    async def test_another_tenants_endpoint_is_not_found(
        self,
        client: httpx.AsyncClient,
        console_keys: ConsoleKeys,
        console_app: FastAPI,
        pg_engine: AsyncEngine,
    ) -> None:
        endpoint_id, delivery_id = await _endpoint_with_failed_delivery(
            pg_engine, console_app, console_keys.tenant_id
        )
        csrf = await signed_in(client, console_keys.other_tenant)
        assert endpoint_id not in (await client.get("/console/webhooks")).text
        assert (await client.get(f"/console/webhooks/{endpoint_id}")).status_code == 404
        action = f"/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"
        assert (await client.post(action, data={"csrf_token": csrf})).status_code == 404
        async with create_sessionmaker(pg_engine)() as session:
            row = await session.get(WebhookDelivery, delivery_id)
            assert row is not None
            assert row.status == "failed"

    async def test_a_reader_sees_no_button_and_cannot_redeliver(
        self,
        client: httpx.AsyncClient,
        console_keys: ConsoleKeys,
        console_app: FastAPI,
        pg_engine: AsyncEngine,
    ) -> None:
        endpoint_id, delivery_id = await _endpoint_with_failed_delivery(
            pg_engine, console_app, console_keys.tenant_id
        )
        csrf = await signed_in(client, console_keys.reader_only)
        page = await client.get(f"/console/webhooks/{endpoint_id}")
        assert page.status_code == 200
        assert "/redeliver" not in page.text
        action = f"/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"
        assert (await client.post(action, data={"csrf_token": csrf})).status_code == 403


async def _active_consent(engine: AsyncEngine, tenant_id: str, bank: str = "<b>bank</b>") -> str:
    """An active test-mode consent of tenant_id (no tokens held): its id."""
    now = datetime.now(UTC)
    async with create_sessionmaker(engine)() as session:
        consent = Consent(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            mode="test",
            siren="405123456",
            bank_id=bank,
            status="active",
            requested_scopes=["accounts"],
            granted_scopes=["accounts", "transactions"],
            accounts=[],
            redirect_uri="https://lender.example/back",
            state_expires_at=now,
            created_by="test",
            created_at=now,
            updated_at=now,
            activated_at=now,
            expires_at=now + timedelta(days=90),
        )
        session.add(consent)
        await session.commit()
        return consent.id


class TestConsents:
    """GET /console/consents and its Revoke button."""

    async def test_signed_out_goes_to_sign_in(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/console/consents")).status_code == 303
        assert (await client.post("/console/consents/x/revoke", data={})).status_code == 303

    async def test_list_and_revoke_with_csrf(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        consent_id = await _active_consent(pg_engine, console_keys.tenant_id)
        csrf = await signed_in(client, console_keys.writer)
        page = await client.get("/console/consents?lang=fr")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert f'data-consent="{consent_id}"' in page.text
        assert "&lt;b&gt;bank&lt;/b&gt;" in page.text
        assert "accounts, transactions" in page.text
        assert "Consentements open banking" in page.text
        action = f"/console/consents/{consent_id}/revoke"
        assert f'action="{action}"' in page.text
        assert (await client.post(action, data={})).status_code == 403
        async with create_sessionmaker(pg_engine)() as session:
            row = await session.get(Consent, consent_id)
            assert row is not None
            assert row.status == "active"
        done = await client.post(action, data={"csrf_token": csrf})
        assert done.status_code == 200
        assert 'data-testid="notice"' in done.text
        async with create_sessionmaker(pg_engine)() as session:
            row = await session.get(Consent, consent_id)
            assert row is not None
            assert row.status == "revoked"
        assert f'action="{action}"' not in done.text

    async def test_another_tenants_consent_is_invisible_and_stays(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        consent_id = await _active_consent(pg_engine, console_keys.tenant_id)
        csrf = await signed_in(client, console_keys.other_tenant)
        assert consent_id not in (await client.get("/console/consents")).text
        action = f"/console/consents/{consent_id}/revoke"
        assert (await client.post(action, data={"csrf_token": csrf})).status_code == 404
        async with create_sessionmaker(pg_engine)() as session:
            row = await session.get(Consent, consent_id)
            assert row is not None
            assert row.status == "active"

    async def test_a_live_session_does_not_see_test_consents(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        consent_id = await _active_consent(pg_engine, console_keys.tenant_id)
        page = await client.get("/console/sign-in")
        form = {**hidden_fields(page.text), "api_key": console_keys.live}
        cookie = _set_cookie(await client.post("/console/sign-in", data=form), "b2b_console")
        # httpx keeps Secure cookies for https only: send it by hand.
        headers = {"Cookie": cookie.split(";")[0]}
        listing = await client.get("/console/consents", headers=headers)
        assert listing.status_code == 200
        assert consent_id not in listing.text


async def _monitored(engine: AsyncEngine, tenant_id: str, key_id: str, siren: str) -> str:
    """A monitored company of tenant_id in test mode, already checked once: its id."""
    now = datetime.now(UTC)
    async with create_sessionmaker(engine)() as session:
        row = MonitoredCompany(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            mode="test",
            api_key_id=key_id,
            siren=siren,
            product="term_loan",
            requested_amount=Decimal("25000.00"),
            rules={},
            external_reference="<script>ref</script>",
            created_at=now,
            last_checked_at=now,
            last_score=712,
            last_grade="B",
        )
        session.add(row)
        await session.commit()
        return row.id


class TestMonitoring:
    """GET /console/monitoring."""

    async def test_signed_out_goes_to_sign_in(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/console/monitoring")).status_code == 303

    async def test_the_tenants_companies_are_listed_and_escaped(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        item = await _monitored(
            pg_engine, console_keys.tenant_id, console_keys.writer_id, "405123456"
        )
        await signed_in(client, console_keys.reader_only)
        page = await client.get("/console/monitoring?lang=fr")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert f'data-monitored="{item}"' in page.text
        assert "&lt;script&gt;ref&lt;/script&gt;" in page.text
        assert "Entreprises surveillées" in page.text
        assert 'href="/console/monitoring"' in page.text

    async def test_another_tenants_companies_are_invisible(
        self, client: httpx.AsyncClient, console_keys: ConsoleKeys, pg_engine: AsyncEngine
    ) -> None:
        item = await _monitored(
            pg_engine, console_keys.tenant_id, console_keys.writer_id, "732829320"
        )
        await signed_in(client, console_keys.other_tenant)
        page = await client.get("/console/monitoring")
        assert page.status_code == 200
        assert item not in page.text
