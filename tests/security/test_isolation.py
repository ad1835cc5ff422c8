"""Tenants see only their own decisions; test keys only the sandbox, live keys never it."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from b2bscore.decisions.crypto import DataKeyring
from b2bscore.decisions.models import Decision
from b2bscore.decisions.service import open_payloads
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.logging import configure_logging
from tests.security.conftest import (
    Stack,
    app_instance,
    assert_problem_json,
    bearer,
    partial_data_allowed,
    score_body,
)
from tests.servers import serve_in_thread

IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b")


def _identifiers(value: Any) -> Iterator[str]:
    """Every IBAN and account id (resourceId) in a raw STET payload."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in {"iban", "resourceId"} and isinstance(item, str):
                yield item
            else:
                yield from _identifiers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _identifiers(item)


async def _score(stack: Stack, key: str, siren: str = "111111118") -> dict[str, Any]:
    response = await stack.client.post("/v1/score", json=score_body(siren), headers=bearer(key))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


class TestTenantIsolation:
    async def test_every_decision_endpoint_answers_404_for_another_tenants_id(
        self, stack: Stack
    ) -> None:
        mine = await _score(stack, stack.keys.writer)
        decision_id = mine["decision_id"]
        json_post = {"Content-Type": "application/json"}
        attempts = [
            await stack.client.get(
                f"/v1/decisions/{decision_id}", headers=bearer(stack.keys.other_tenant)
            ),
            await stack.client.post(
                f"/v1/decisions/{decision_id}/replay",
                headers=bearer(stack.keys.other_tenant, **json_post),
            ),
        ]
        for response in attempts:
            assert response.status_code == 404, response.text
            assert assert_problem_json(response)["code"] == "decision_not_found"
            assert mine["siren"] not in response.text
        # The owner still sees it: the 404 was about the tenant, not the id.
        own = await stack.client.get(
            f"/v1/decisions/{decision_id}", headers=bearer(stack.keys.writer)
        )
        assert own.status_code == 200

    async def test_lists_never_include_other_tenants_rows(self, stack: Stack) -> None:
        mine = await _score(stack, stack.keys.writer)
        theirs = await _score(stack, stack.keys.other_tenant)
        for key, own, foreign in (
            (stack.keys.writer, mine, theirs),
            (stack.keys.other_tenant, theirs, mine),
        ):
            seen: list[str] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 50, "siren": "111111118"}
                if cursor:
                    params["cursor"] = cursor
                page = await stack.client.get("/v1/decisions", params=params, headers=bearer(key))
                assert page.status_code == 200, page.text
                body = page.json()
                seen += [item["decision_id"] for item in body["items"]]
                cursor = body["next_cursor"]
                if not cursor:
                    break
            assert own["decision_id"] in seen
            assert foreign["decision_id"] not in seen

    async def test_another_tenants_cursor_reveals_nothing(self, stack: Stack) -> None:
        await _score(stack, stack.keys.writer)
        page = await stack.client.get(
            "/v1/decisions", params={"limit": 1}, headers=bearer(stack.keys.writer)
        )
        cursor = page.json()["next_cursor"]
        assert cursor
        theirs = await stack.client.get(
            "/v1/decisions", params={"cursor": cursor}, headers=bearer(stack.keys.other_tenant)
        )
        assert theirs.status_code == 200
        owners = {item["decision_id"] for item in theirs.json()["items"]}
        async with stack.engine.connect() as connection:
            tenant_of = dict(
                (await connection.execute(select(Decision.id, Decision.tenant_id))).all()
            )
        assert {tenant_of[d] for d in owners} <= {stack.keys.tenant_b}


class Recorder:
    """Counts the requests a fake live provider receives."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def app(self) -> Starlette:
        async def anything(request: Request) -> JSONResponse:
            self.paths.append(request.url.path)
            return JSONResponse({"error": "unavailable"}, status_code=503)

        return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])


@pytest.fixture(scope="module")
def live_provider() -> Iterator[tuple[Recorder, str]]:
    """A live provider endpoint that records every call."""
    recorder = Recorder()
    with serve_in_thread(recorder.app()) as url:
        yield recorder, url


@pytest.fixture
async def with_live(
    stack: Stack, live_provider: tuple[Recorder, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    """An API instance with the sandbox AND live providers configured."""
    recorder, url = live_provider
    settings = stack.settings.model_copy(
        update={
            "live_open_banking_url": url,
            "live_registry_url": url,
            "live_bodacc_url": url,
            "live_accounting_url": url,
        }
    )
    async with app_instance(settings) as (_, client):
        yield client, recorder


class TestModeSeparation:
    async def test_a_live_key_never_gets_sandbox_data(self, stack: Stack) -> None:
        # Only the sandbox is configured here: a live key must find nothing at all (and
        # is refused unless its tenant allows partial data: tests/security/test_modes.py).
        async with partial_data_allowed(stack.engine, stack.keys.tenant_a):
            answer = await _score(stack, stack.keys.live)
        assert {s["status"] for s in answer["sources"].values()} == {"unavailable"}
        assert answer["decision"] == "review"
        assert answer["mode"] == "live"

    async def test_a_test_key_never_calls_live_providers(
        self, stack: Stack, with_live: tuple[httpx.AsyncClient, Recorder]
    ) -> None:
        client, recorder = with_live
        recorder.paths.clear()
        response = await client.post(
            "/v1/score", json=score_body("333333334"), headers=bearer(stack.keys.writer)
        )
        assert response.status_code == 200, response.text
        assert {s["status"] for s in response.json()["sources"].values()} <= {"ok", "cached"}
        assert recorder.paths == []
        # The control: the same instance does route a live key to the live providers.
        response = await client.post(
            "/v1/score", json=score_body("333333334"), headers=bearer(stack.keys.live)
        )
        assert response.status_code == 200, response.text
        assert recorder.paths, "the live key should have reached the live providers"
        assert all(s["status"] != "ok" for s in response.json()["sources"].values())


@pytest.fixture
def production_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged under the service's own logging set-up, at DEBUG for b2bscore."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    chatty = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    configure_logging("DEBUG")
    root.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        root.handlers[:], root.level = saved
        for name, level in chatty.items():
            logging.getLogger(name).setLevel(level)


class TestTokenization:
    async def test_no_iban_or_account_id_outside_the_encrypted_payload(
        self, stack: Stack, production_logs: pytest.LogCaptureFixture
    ) -> None:
        caplog = production_logs
        answers = [
            await _score(stack, stack.keys.writer, siren)
            for siren in ("111111118", "333333334", "999999998")
        ]
        keyring: DataKeyring = stack.state.keyring
        async with create_sessionmaker(stack.engine)() as session:
            statement = select(Decision).where(Decision.id.in_([a["decision_id"] for a in answers]))
            rows = (await session.execute(statement)).scalars().all()
        assert len(rows) == len(answers)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        found: set[str] = set()
        for row in rows:
            payloads = open_payloads(row, keyring)
            assert payloads is not None
            identifiers = set(_identifiers(payloads))
            found |= identifiers
            exposed = repr(
                [row.features, row.sources, row.reasons, row.request, row.siren, row.product]
            )
            for identifier in identifiers:
                assert identifier not in exposed, f"{identifier} stored in clear"
                assert identifier not in logged, f"{identifier} logged"
            assert not IBAN.search(exposed)
        # The sandbox really served IBANs and account ids: the scan above meant something.
        assert any(IBAN.fullmatch(i) for i in found), found
        wire = repr(answers)
        assert not IBAN.search(wire)
