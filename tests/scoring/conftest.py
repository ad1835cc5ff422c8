"""An API wired to real PostgreSQL, real Redis and the sandbox over real HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import build_state, close_state, create_app
from b2bscore.decisions.models import Decision
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.settings import Settings
from b2bscore.tenants import service as tenants

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Keys:
    """API keys of two tenants, with various scopes and modes."""

    writer: str  # tenant A, test mode, score:write + decisions:read
    reader_only: str  # tenant A, decisions:read only
    other_tenant: str  # tenant B, test mode, all scopes
    live: str  # tenant A, live mode


@pytest.fixture(scope="session")
async def keys(pg_engine: AsyncEngine) -> Keys:
    """Keys created once per session in the session's database."""
    async with create_sessionmaker(pg_engine)() as session:
        a = await tenants.create_tenant(session, "acme-lending")
        b = await tenants.create_tenant(session, "other-bank")
        _, writer = await tenants.create_api_key(
            session, a, "test", ["score:write", "decisions:read"]
        )
        _, reader = await tenants.create_api_key(session, a, "test", ["decisions:read"])
        _, other = await tenants.create_api_key(
            session, b, "test", ["score:write", "decisions:read"]
        )
        _, live = await tenants.create_api_key(
            session, a, "live", ["score:write", "decisions:read"]
        )
        await session.commit()
    return Keys(writer, reader, other, live)


@pytest.fixture(scope="session")
def api_settings(
    postgres_url: str, redis_url: str, sandbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings of the API under test."""
    return Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        sandbox_url=sandbox_url,
        var_dir=tmp_path_factory.mktemp("var"),
        models_dir=Path(os.environ.get("B2BSCORE_TEST_MODELS_DIR", REPO / "models")),
        rate_limit_per_minute=100_000,
        unauthenticated_rate_limit_per_minute=100_000,
    )


@pytest.fixture(scope="session")
async def api(api_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API in process, its providers over real HTTP."""
    app = create_app(api_settings)
    app.state.b2b = await build_state(api_settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client
    await close_state(app.state.b2b)


async def count_decisions(engine: AsyncEngine) -> int:
    """Rows in the audit store."""
    async with engine.connect() as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(Decision))).scalar_one()
        )


def bearer(key: str) -> dict[str, str]:
    """Authorization header for key."""
    return {"Authorization": f"Bearer {key}"}
