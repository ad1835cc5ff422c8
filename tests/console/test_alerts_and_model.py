"""Monitored companies' alerts and a tenant's own model page, each walled to the key's mode."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from b2bscore.console.service import COMPANY_EVENTS
from b2bscore.decisions.models import Decision
from b2bscore.kit.db import create_engine, create_sessionmaker, upgrade_database_async
from b2bscore.model.models import ShadowScore
from b2bscore.model.serving import ServingModels
from b2bscore.tenants import service as tenants
from b2bscore.webhooks import service as webhooks
from b2bscore.webhooks.repository import WebhookRepository
from tests.console.conftest import (
    LIVE_ONLY,
    LIVE_SCORE,
    OTHER_TENANT,
    TEST_SCORE,
    ConsoleKeys,
    Walled,
    fresh_siren,
    hidden_fields,
    signed_in,
)
from tests.console.test_pages import _assert_strict_page

_ESCAPED_TEST_ONLY = "TEST-ONLY &lt;script&gt;alert(1)&lt;/script&gt;"


async def _live_headers(client: httpx.AsyncClient, key: str) -> dict[str, str]:
    """Sign a live key in; its cookie is Secure, which httpx keeps for https only."""
    client.cookies.clear()  # signed in already, the sign-in page would move on
    page = await client.get("/console/sign-in")
    answer = await client.post(
        "/console/sign-in", data={**hidden_fields(page.text), "api_key": key}
    )
    assert answer.status_code == 303
    for header in answer.headers.get_list("set-cookie"):
        if header.startswith("b2b_console="):
            return {"Cookie": header.split(";")[0]}
    raise AssertionError("no session cookie")


class TestEventsRead:
    """WebhookRepository.events: per key, newest first, tenant and mode walls."""

    async def test_on_postgresql(self, pg_engine: AsyncEngine) -> None:
        await _events_read(pg_engine)

    async def test_on_sqlite_the_embedded_default(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
        await upgrade_database_async(url)
        engine = create_engine(url)
        try:
            await _events_read(engine)
        finally:
            await engine.dispose()


async def _events_read(engine: AsyncEngine) -> None:
    """A noisy key, a quiet one, the other mode, another tenant, another kind of event."""
    noisy, quiet = fresh_siren(), fresh_siren()
    async with create_sessionmaker(engine)() as session:
        tenant = await tenants.create_tenant(session, "events-read")
        other = await tenants.create_tenant(session, "events-read-other")
        start = datetime.now(UTC) - timedelta(hours=1)
        for i in range(5):
            await _closed(session, tenant.id, "test", noisy, start + timedelta(minutes=i))
        await _closed(session, tenant.id, "test", quiet, start)
        await _closed(session, tenant.id, "live", quiet, start)
        await _closed(session, other.id, "test", quiet, start)
        await webhooks.emit_event(
            session,
            tenant_id=tenant.id,
            mode="test",
            event_type="batch.completed",
            ordering_key=noisy,  # another kind of event on the same key
            data={
                "batch_id": "b",
                "status": "completed",
                "total_rows": 1,
                "decided_rows": 1,
                "invalid_rows": 0,
                "failed_rows": 0,
            },
        )
        await session.commit()
        repository = WebhookRepository(session)
        rows = await repository.events(
            tenant.id, "test", [noisy, quiet], types=COMPANY_EVENTS, per_key=3
        )
        assert [e.ordering_key for e in rows].count(noisy) == 3
        assert [e.ordering_key for e in rows].count(quiet) == 1
        assert all(e.tenant_id == tenant.id and e.mode == "test" for e in rows)
        assert all(e.type == "company.closed" for e in rows)
        noisy_times = [e.created_at for e in rows if e.ordering_key == noisy]
        assert noisy_times == sorted(noisy_times, reverse=True)
        assert noisy_times[0] == start + timedelta(minutes=4)
        every = await repository.events(tenant.id, "test", [noisy], per_key=10)
        assert {e.type for e in every} == {"company.closed", "batch.completed"}
        assert await repository.events(tenant.id, "test", []) == []


async def _closed(
    session: AsyncSession, tenant_id: str, mode: str, siren: str, at: datetime
) -> None:
    await webhooks.emit_event(
        session,
        tenant_id=tenant_id,
        mode=mode,
        event_type="company.closed",
        ordering_key=siren,
        data={
            "monitored_company_id": "m",
            "siren": siren,
            "external_reference": None,
            "detected_at": at,
        },
        now=at,
    )


class TestGuards:
    """The new pages behind the console's one guard: signed in, then decisions:read."""

    async def test_signed_out_goes_to_sign_in(self, client: httpx.AsyncClient) -> None:
        for path in ("/console/model", "/console/monitoring/anything"):
            page = await client.get(path)
            assert page.status_code == 303
            assert page.headers["location"].startswith("/console/sign-in?")

    async def test_a_key_without_decisions_read_gets_403_and_no_links(
        self, client: httpx.AsyncClient, walled: Walled
    ) -> None:
        await signed_in_score_only(client, walled.score_only)
        score_page = (await client.get("/console/score")).text
        for path in ("/console/model", "/console/monitoring", "/console/models"):
            assert f'href="{path}"' not in score_page
        for path in (
            "/console/model",
            "/console/monitoring",
            f"/console/monitoring/{walled.test_item}",
        ):
            page = await client.get(path)
            assert page.status_code == 403
            assert "decisions:read" in page.text
            assert "TEST-ONLY" not in page.text
        assert (await client.get("/console/models")).status_code == 403


class TestMonitoringAlerts:
    """/console/monitoring and /console/monitoring/{id}: alerts of the key's mode only."""

    async def test_the_list_shows_each_companys_alerts_of_the_keys_mode(
        self, client: httpx.AsyncClient, walled: Walled
    ) -> None:
        await signed_in(client, walled.test_key)
        page = await client.get("/console/monitoring")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert f'data-monitored="{walled.test_item}"' in page.text
        assert walled.live_item not in page.text
        cell = page.text.split(f'data-testid="alerts-{walled.siren}"')[1].split("</td>")[0]
        assert _ESCAPED_TEST_ONLY in cell
        assert "712 (B) → 540 (C) · grade dropped" in cell
        assert "Score changed" in cell
        assert LIVE_ONLY not in page.text
        assert OTHER_TENANT not in page.text
        assert "<script>alert(1)" not in page.text
        assert f'href="/console/monitoring/{walled.test_item}"' in page.text

        headers = await _live_headers(client, walled.live_key)
        live = await client.get("/console/monitoring", headers=headers)
        assert live.status_code == 200
        assert f'data-monitored="{walled.live_item}"' in live.text
        assert walled.test_item not in live.text
        assert LIVE_ONLY in live.text
        assert "TEST-ONLY" not in live.text
        assert "712 (B)" not in live.text
        assert OTHER_TENANT not in live.text

    async def test_one_companys_page_and_its_walls(
        self, client: httpx.AsyncClient, walled: Walled, console_keys: ConsoleKeys
    ) -> None:
        await signed_in(client, walled.test_key)
        page = await client.get(f"/console/monitoring/{walled.test_item}?lang=fr")
        assert page.status_code == 200
        _assert_strict_page(page)
        assert walled.siren in page.text
        assert _ESCAPED_TEST_ONLY in page.text
        assert "Procédure collective ouverte" in page.text
        assert "Score modifié" in page.text
        assert "712 (B) → 540 (C) · note en baisse" in page.text
        assert LIVE_ONLY not in page.text
        assert OTHER_TENANT not in page.text
        # The same company watched in live mode is another row: not found from a test key.
        assert (await client.get(f"/console/monitoring/{walled.live_item}")).status_code == 404
        assert (await client.get("/console/monitoring/" + "x" * 80)).status_code == 404

        live = await client.get(
            f"/console/monitoring/{walled.live_item}",
            headers=await _live_headers(client, walled.live_key),
        )
        assert live.status_code == 200
        assert LIVE_ONLY in live.text
        assert "TEST-ONLY" not in live.text

        await signed_in(client, console_keys.other_tenant)
        assert (await client.get(f"/console/monitoring/{walled.test_item}")).status_code == 404


async def signed_in_score_only(client: httpx.AsyncClient, key: str) -> str:
    """Sign in a key that cannot read decisions (signed_in reads the decisions page)."""
    page = await client.get("/console/sign-in")
    answer = await client.post(
        "/console/sign-in", data={**hidden_fields(page.text), "api_key": key}
    )
    assert answer.status_code == 303
    return hidden_fields((await client.get("/console/score")).text)["csrf_token"]


_BIN_ROW = re.compile(
    r'<tr><td>(?P<low>\d+)–(?P<high>\d+)</td><td class="num">(?P<ref>[^<]+)</td>'
    r'<td class="num">(?P<yours>[^<]+)</td></tr>'
)


def _share_of_bin(html: str, score: int) -> str:
    table = html.split('data-testid="score-bins"')[1].split("</table>")[0]
    for match in _BIN_ROW.finditer(table):
        if int(match["low"]) <= score <= int(match["high"]):
            return match["yours"]
    raise AssertionError(f"no bin holds {score}")


class TestTenantModel:
    """/console/model: the models behind the tenant's decisions and its own drift, per mode."""

    async def test_a_test_key_sees_its_test_decisions_only(
        self, client: httpx.AsyncClient, walled: Walled, console_app: FastAPI
    ) -> None:
        await signed_in(client, walled.test_key)
        page = await client.get("/console/model?window=24h")
        assert page.status_code == 200
        _assert_strict_page(page)
        serving = console_app.state.b2b.bundle
        assert f'data-testid="live-model">{serving.model_id}<' in page.text
        assert 'href="/console/model"' in page.text
        # Platform-wide drift stays with operators: no link for an analyst.
        assert 'href="/console/models"' not in page.text
        assert f"{walled.test_decisions} decisions in the window." in page.text
        used = page.text.split('data-testid="models-used"')[1].split("</table>")[0]
        assert f'<td class="num">{walled.test_decisions}</td>' in used
        assert f'<td class="num">{walled.live_decisions}</td>' not in used
        assert _share_of_bin(page.text, TEST_SCORE) == "100.0%"
        assert _share_of_bin(page.text, LIVE_SCORE) == "0.0%"
        assert 'data-testid="score-psi"' in page.text
        assert "svg" in page.text.split('data-testid="tenant-drift"')[1]

    async def test_a_live_key_sees_its_live_decisions_only(
        self, client: httpx.AsyncClient, walled: Walled
    ) -> None:
        headers = await _live_headers(client, walled.live_key)
        page = await client.get("/console/model?window=24h&lang=fr", headers=headers)
        assert page.status_code == 200
        assert f"{walled.live_decisions} décisions sur la période." in page.text
        assert _share_of_bin(page.text, LIVE_SCORE) == "100,0\u202f%"
        assert _share_of_bin(page.text, TEST_SCORE) == "0,0\u202f%"
        assert "Vos scores face à la référence d&#39;entraînement" in page.text

    async def test_the_shadow_its_agreement_and_a_canary_deciding_for_the_tenant(
        self,
        client: httpx.AsyncClient,
        walled: Walled,
        console_app: FastAPI,
        pg_engine: AsyncEngine,
    ) -> None:
        state = console_app.state.b2b
        bundle = state.bundle
        async with create_sessionmaker(pg_engine)() as session:
            decisions = (
                await session.scalars(
                    select(Decision).where(Decision.tenant_id == walled.tenant_id)
                )
            ).all()
            # The shadow agrees on the first test decision, not the second, and on every live
            # one: a test key's agreement is 1 of 2 (were live rows counted, 4 of 5).
            test_ids = [d.id for d in decisions if d.mode == "test"]
            assert len(test_ids) == walled.test_decisions == 2
            for row in decisions:
                agrees = row.id != test_ids[1]
                session.add(
                    ShadowScore(
                        decision_id=row.id,
                        tenant_id=row.tenant_id,
                        model_id="shadow-candidate",
                        model_version="0.1",
                        probability_of_default="0.5",
                        score=500,
                        grade="C",
                        decision=row.decision if agrees else "decline",
                        created_at=datetime.now(UTC),
                    )
                )
            await session.commit()
        shown = ServingModels(
            live=bundle, shadow=bundle, canary=bundle, canary_tenants=frozenset({walled.tenant_id})
        )
        before, state.serving = state.serving, shown
        try:
            await signed_in(client, walled.test_key)
            page = await client.get("/console/model?window=24h")
        finally:
            state.serving = before
        assert page.status_code == 200
        shadow = page.text.split('data-testid="shadow-model"')[1].split("</dd>")[0]
        assert bundle.model_id in shadow
        canary = page.text.split('data-testid="canary-model"')[1].split("</dd>")[0]
        assert "decides all of your requests" in canary
        agreement = page.text.split('data-testid="shadow-agreement"')[1].split("</p>")[0]
        assert "agreed on 50.0% of 2 of your decisions" in agreement
