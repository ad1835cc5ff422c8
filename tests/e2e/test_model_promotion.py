"""Promotion and rollback under load: two workers as processes, PostgreSQL, Redis.

While clients score without pause (a new connection per request, so both workers get
them), the operator promotes a candidate, tries a corrupted bundle (refused), then rolls
back, all through the `b2bscore models` command line. No request may fail, and every
recorded decision must carry the version that answered it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from b2bscore.kit.db import create_engine, create_sessionmaker, upgrade_database
from b2bscore.model import registry
from b2bscore.model.models import ModelEvent
from b2bscore.tenants import service as tenants
from b2bscore.training import world
from tests.backends import database_url as url_of_database
from tests.e2e.test_processes import _env, _stop, _wait_for
from tests.model.registry_helpers import CORRUPT, GOOD, LIVE_DEFAULT, make_models_dir
from tests.security.conftest import admin_execute
from tests.servers import free_port

pytestmark = pytest.mark.e2e
SIRENS = ["111111118", "444444442", *world.sample_sirens(6, 61)]
SWITCH_SECONDS = 15.0


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b2bscore", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _test_key(database_url: str) -> str:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            tenant = await tenants.create_tenant(session, "promo")
            _, key = await tenants.create_api_key(
                session, tenant, "test", ["score:write", "decisions:read"]
            )
            await session.commit()
            return key
    finally:
        await engine.dispose()


async def _events(database_url: str) -> list[ModelEvent]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            assert await registry.verify_events(session) is None
            return await registry.events(session)
    finally:
        await engine.dispose()


def _applied(base_url: str) -> int:
    """The model event every live worker has applied (the laggard's), from /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    match = re.search(r"^b2bscore_model_event_applied(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else -1


def _wait_applied(base_url: str, event_id: int) -> float:
    started = time.monotonic()
    while time.monotonic() - started < SWITCH_SECONDS:
        if _applied(base_url) >= event_id:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"event {event_id} not applied by every worker in {SWITCH_SECONDS} s")


class Load:
    """Clients scoring in threads until stopped; every answer kept with its time."""

    def __init__(self, base_url: str, key: str, clients: int = 2) -> None:
        self.base_url, self.key = base_url, key
        self.answers: list[tuple[float, float, int, dict[str, Any]]] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def _run(self, index: int) -> None:
        # No keep-alive: each request is a new connection, spread over both workers.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.base_url, limits=limits, timeout=10) as client:
            n = index
            while not self.stopped.is_set():
                siren = SIRENS[n % len(SIRENS)]
                n += 1
                sent = time.monotonic()
                response = client.post(
                    "/v1/score",
                    json={"siren": siren, "requested_amount": "20000.00", "product": "bnpl"},
                    headers={"Authorization": f"Bearer {self.key}"},
                )
                body = response.json() if response.status_code == 200 else {"text": response.text}
                self.answers.append((sent, time.monotonic(), response.status_code, body))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.fixture
def database_url(postgres_admin_dsn: str) -> Iterator[str]:
    """A fresh migrated database of its own: the registry's roles are global to it."""
    name = f"b2bscore_promo_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(admin_execute(postgres_admin_dsn, f'CREATE DATABASE "{name}"'))
    url = url_of_database(postgres_admin_dsn, name)
    try:
        upgrade_database(url)
        yield url
    finally:
        asyncio.run(
            admin_execute(postgres_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


def test_promotion_and_rollback_under_load(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    models_dir = make_models_dir(tmp_path / "models")
    sandbox_port, api_port = free_port(), free_port()
    env = _env(
        B2BSCORE_DATABASE_URL=database_url,
        B2BSCORE_REDIS_URL=redis_url,
        B2BSCORE_SANDBOX_URL=f"http://127.0.0.1:{sandbox_port}",
        B2BSCORE_VAR_DIR=str(tmp_path / "var"),
        B2BSCORE_MODEL_ID=LIVE_DEFAULT,
        B2BSCORE_MODEL_POLL_SECONDS="0.5",
        B2BSCORE_RATE_LIMIT_PER_MINUTE="100000",
        # The test is about switching models, not latency: on a loaded CI machine a 500 ms
        # budget would fail requests for reasons that have nothing to do with the switch.
        B2BSCORE_DEADLINE_MS="5000",
    )
    env["B2BSCORE_MODELS_DIR"] = str(models_dir)
    key = asyncio.run(_test_key(database_url))
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "sandbox", "--port", str(sandbox_port)],
        env=env,
        text=True,
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "serve", "--port", str(api_port), "--workers", "2"],
        env=env,
        cwd=tmp_path,
        text=True,
    )
    base_url = f"http://127.0.0.1:{api_port}"
    try:
        _wait_for(f"http://127.0.0.1:{sandbox_port}/healthz", sandbox)
        _wait_for(f"{base_url}/readyz", api)
        with Load(base_url, key) as load:
            time.sleep(1.0)
            promoted = _cli(env, "models", "promote", "2026.11.9", "--actor", "e2e:ops")
            assert promoted.returncode == 0, promoted.stderr
            promote_event = int(re.search(r'"event_id": (\d+)', promoted.stdout).group(1))  # type: ignore[union-attr]
            promote_seconds = _wait_applied(base_url, promote_event)
            switched_at = time.monotonic()
            time.sleep(1.0)

            refused = _cli(env, "models", "promote", CORRUPT)
            assert refused.returncode == 1
            assert "refused" in refused.stderr
            assert "sha256 mismatch" in refused.stderr
            time.sleep(1.0)

            rolled = _cli(env, "models", "rollback", "--actor", "e2e:ops")
            assert rolled.returncode == 0, rolled.stderr
            rollback_event = int(re.search(r'"event_id": (\d+)', rolled.stdout).group(1))  # type: ignore[union-attr]
            _wait_applied(base_url, rollback_event)
            rolled_at = time.monotonic()
            time.sleep(1.0)
        answers = load.answers
        failed = [a for a in answers if a[2] != 200]
        assert not failed, failed[:3]
        assert len(answers) >= 20
        models = [a[3]["model"]["id"] for a in answers]
        assert set(models) == {LIVE_DEFAULT, GOOD}
        # Once every worker applied a switch, every request sent afterwards gets the new model.
        assert all(m == GOOD for (sent, _, _, _), m in zip(answers, models, strict=True)
                   if switched_at < sent and sent < rolled_at - SWITCH_SECONDS)  # fmt: skip
        after_rollback = [m for (sent, _, _, _), m in zip(answers, models, strict=True)
                          if sent > rolled_at]  # fmt: skip
        assert after_rollback
        assert set(after_rollback) == {LIVE_DEFAULT}
        between = [m for (sent, _, _, _), m in zip(answers, models, strict=True)
                   if switched_at < sent < switched_at + 1.0]  # fmt: skip
        assert between
        assert set(between) == {GOOD}
        # Each recorded decision names the bundle that answered it.
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as c:
            for _, _, _, body in answers[:: max(1, len(answers) // 40)]:
                stored = c.get(f"/v1/decisions/{body['decision_id']}").json()
                assert stored["model"] == body["model"]
        events = asyncio.run(_events(database_url))
        assert [(e.action, e.actor) for e in events] == [
            ("rollback", "e2e:ops"),
            ("promote", "e2e:ops"),
        ]
        assert (events[1].from_model, events[1].to_model) == (LIVE_DEFAULT, GOOD)
        assert promote_seconds < SWITCH_SECONDS
    finally:
        _stop(api)
        _stop(sandbox)
