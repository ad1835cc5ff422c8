"""The API with its job engine on real PostgreSQL, a worker in the test's event loop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import build_state, close_state, create_app
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.settings import Settings
from b2bscore.kit.state import AppState
from b2bscore.tenants import service as tenants
from tests.servers import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
FLOW_DATA_KEYS = "flows1:" + base64.b64encode(b"f" * 32).decode()


@dataclass(frozen=True)
class FlowKeys:
    """Keys of two tenants: scopes and modes for one class per endpoint."""

    writer: str  # tenant A, test, score:write + decisions:read
    reader_only: str  # tenant A, test, decisions:read
    writer_only: str  # tenant A, test, score:write
    other_tenant: str  # tenant B, test, both scopes
    live: str  # tenant A, live, both scopes
    tenant_a: str
    tenant_b: str
    writer_key_id: str


@pytest.fixture(scope="session")
async def flow_keys(pg_engine: AsyncEngine) -> FlowKeys:
    """Keys created once per session."""
    both = ["score:write", "decisions:read"]
    async with create_sessionmaker(pg_engine)() as session:
        a = await tenants.create_tenant(session, "flows-lender-a")
        b = await tenants.create_tenant(session, "flows-lender-b")
        writer_row, writer = await tenants.create_api_key(session, a, "test", both)
        _, reader = await tenants.create_api_key(session, a, "test", ["decisions:read"])
        _, writer_only = await tenants.create_api_key(session, a, "test", ["score:write"])
        _, other = await tenants.create_api_key(session, b, "test", both)
        _, live = await tenants.create_api_key(session, a, "live", both)
        await session.commit()
        return FlowKeys(writer, reader, writer_only, other, live, a.id, b.id, writer_row.id)


@dataclass(frozen=True)
class MovingSandbox:
    """A sandbox served over HTTP whose world moves with the events of its own store."""

    url: str
    events_file: Path


@pytest.fixture(scope="session")
def moving_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MovingSandbox]:
    """The sandbox (zero latency) reading events from a store of this test session."""
    from b2bscore.sandbox.app import create_sandbox_app
    from b2bscore.sandbox.events import EventStore
    from b2bscore.sandbox.profile import SandboxProfile

    events_file = tmp_path_factory.mktemp("sandbox-events") / "events.jsonl"
    app = create_sandbox_app(SandboxProfile.preset("zero"), events=EventStore(events_file))
    with serve_in_thread(app) as url:
        yield MovingSandbox(url, events_file)


@pytest.fixture(scope="session")
def flow_settings(
    postgres_url: str,
    redis_url: str,
    moving_sandbox: MovingSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """Fast retry schedule and polling, so that retries are seen within a test."""
    return Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        sandbox_url=moving_sandbox.url,
        var_dir=tmp_path_factory.mktemp("flows-var"),
        models_dir=Path(os.environ.get("B2BSCORE_TEST_MODELS_DIR", REPO / "models")),
        rate_limit_per_minute=100_000,
        jobs_poll_seconds=0.1,
        jobs_in_process=False,
        webhook_retry_base_seconds=0.2,
        webhook_retry_cap_seconds=0.6,
        webhook_max_attempts=4,
        webhook_timeout_seconds=1.0,
        webhook_max_endpoints=500,
        jobs_stalled_seconds=3,
        # Fixed keys, shared with the worker processes of the batch tests.
        data_keys=SecretStr(FLOW_DATA_KEYS),
    )


# Module scope: the worker's own tasks must not outlive the modules that use it (other
# tests compare the event loop's tasks before and after).
@pytest.fixture(scope="module")
async def flow_state(flow_settings: Settings) -> AsyncIterator[AppState]:
    """The application state, with a job worker running in this event loop."""
    state = await build_state(flow_settings)
    assert state.jobs is not None
    # Batches go to the `b2bscore worker` processes of the batch tests (tests/portfolio).
    worker = asyncio.create_task(
        state.jobs.run_worker(
            state, concurrency=8, name="test", queues=["default", "webhooks", "monitoring"]
        )
    )
    yield state
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    await close_state(state)


@pytest.fixture(scope="module")
async def flow_api(
    flow_settings: Settings, flow_state: AppState
) -> AsyncIterator[httpx.AsyncClient]:
    """The API in process, sharing the state the worker uses."""
    app = create_app(flow_settings)
    app.state.b2b = flow_state
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of key."""
    return {"Authorization": f"Bearer {key}"}
