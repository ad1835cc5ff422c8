"""POST /v1/companies/{siren}/books on the real app: PostgreSQL, Redis, the sandbox over HTTP."""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from b2bscore.app import build_state, close_state, create_app
from b2bscore.books.models import CompanyBooks
from b2bscore.books.service import read_uploaded
from b2bscore.kit.db import create_sessionmaker
from b2bscore.kit.settings import Settings
from b2bscore.tenants import service as tenants
from b2bscore.training.world import SCENARIOS
from tests.sources import payloads

REPO = Path(__file__).resolve().parents[2]
ODOO_FEC = (REPO / "tests/sources/fixtures/fec/odoo_l10n_fr_fec_pipe.txt").read_bytes()
THIN = SCENARIOS["thin_file_startup"]  # the sandbox has no books for it
BOOKS_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Keys:
    """Keys of two tenants."""

    writer: str  # tenant A, test, score:write
    reader_only: str  # tenant A, test, decisions:read
    other_tenant: str  # tenant B, test, score:write
    live: str  # tenant A, live, score:write
    tenant_a: str
    tenant_b: str


@pytest.fixture(scope="module")
async def keys(pg_engine: AsyncEngine) -> Keys:
    """Keys committed once for the module."""
    async with create_sessionmaker(pg_engine)() as session:
        a = await tenants.create_tenant(session, "books-a")
        b = await tenants.create_tenant(session, "books-b")
        _, writer = await tenants.create_api_key(
            session, a, "test", ["score:write", "decisions:read"]
        )
        _, reader = await tenants.create_api_key(session, a, "test", ["decisions:read"])
        _, other = await tenants.create_api_key(session, b, "test", ["score:write"])
        _, live = await tenants.create_api_key(session, a, "live", ["score:write"])
        # No live provider is configured here: tenant A scores live on what it uploads.
        await tenants.set_partial_data(session, a.id, True)
        await session.commit()
    return Keys(writer, reader, other, live, a.id, b.id)


@pytest.fixture(scope="module")
async def app_and_client(
    postgres_url: str, redis_url: str, sandbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    """The API in process with a small books limit."""
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        sandbox_url=sandbox_url,
        var_dir=tmp_path_factory.mktemp("var"),
        models_dir=Path(os.environ.get("B2BSCORE_TEST_MODELS_DIR", REPO / "models")),
        rate_limit_per_minute=100_000,
        books_max_bytes=BOOKS_LIMIT,
    )
    app = create_app(settings)
    app.state.b2b = await build_state(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield app, client
    await close_state(app.state.b2b)


@pytest.fixture
def api(app_and_client: tuple[object, httpx.AsyncClient]) -> httpx.AsyncClient:
    """The API client."""
    return app_and_client[1]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "text/plain"}


async def _stored(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(CompanyBooks)
        return int((await connection.execute(query)).scalar_one())


def _books_fec(revenue: str = "60000.00") -> bytes:
    lines = [dict(line) for line in payloads.SMALL_TRIAL_BALANCE]
    for line in lines:
        if line["account"] == "706000":
            line["credit"] = revenue
        if line["account"] == "101000":  # keep the entry balanced
            delta = Decimal(revenue) - Decimal("60000.00")
            line["credit"] = str(Decimal("10000.00") - delta)
    # Latin-1, tab separated, 8-digit accounts: a dialect unlike the sandbox's default.
    text = payloads.fec_text(lines).replace("|", "\t")
    return text.encode("latin-1")


class TestPostBooks:
    """POST /v1/companies/{siren}/books."""

    async def test_401_without_a_key(self, api: httpx.AsyncClient) -> None:
        r = await api.post(f"/v1/companies/{THIN}/books", content=b"x")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"

    async def test_403_without_score_write(self, api: httpx.AsyncClient, keys: Keys) -> None:
        r = await api.post(
            f"/v1/companies/{THIN}/books", content=_books_fec(), headers=_auth(keys.reader_only)
        )
        assert r.status_code == 403

    async def test_422_invalid_siren_and_empty_body(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        before = await _stored(pg_engine)
        r = await api.post(
            "/v1/companies/123456789/books", content=_books_fec(), headers=_auth(keys.writer)
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "siren"
        r = await api.post(f"/v1/companies/{THIN}/books", content=b"", headers=_auth(keys.writer))
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "body"
        r = await api.post(
            f"/v1/companies/{THIN}/books?filename=552100554FEC20251231.txt",
            content=_books_fec(),
            headers=_auth(keys.writer),
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "filename"
        assert await _stored(pg_engine) == before

    async def test_422_bad_file_names_line_and_column_and_stores_nothing(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        before = await _stored(pg_engine)
        bad = _books_fec().replace(b"\t20251231\t706000", b"\t2025-31-12\t706000")
        r = await api.post(f"/v1/companies/{THIN}/books", content=bad, headers=_auth(keys.writer))
        assert r.status_code == 422
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert problem["code"] == "invalid_fec"
        assert problem["errors"][0]["column"] == "EcritureDate"
        assert problem["errors"][0]["line"] == 18
        assert "line 18, column EcritureDate" in problem["detail"]
        unbalanced = _books_fec().replace(b"\t0,00\t60000,00\t", b"\t0,00\t60000,01\t")
        r = await api.post(
            f"/v1/companies/{THIN}/books", content=unbalanced, headers=_auth(keys.writer)
        )
        assert r.status_code == 422
        assert "unbalanced" in r.json()["detail"]
        assert await _stored(pg_engine) == before

    async def test_413_over_the_documented_limit(
        self, api: httpx.AsyncClient, keys: Keys, pg_engine: AsyncEngine
    ) -> None:
        before = await _stored(pg_engine)
        big = _books_fec() + b" " * BOOKS_LIMIT
        r = await api.post(f"/v1/companies/{THIN}/books", content=big, headers=_auth(keys.writer))
        assert r.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(5):
                yield b" " * (BOOKS_LIMIT // 4)

        r = await api.post(
            f"/v1/companies/{THIN}/books", content=chunks(), headers=_auth(keys.writer)
        )
        assert r.status_code == 413
        assert await _stored(pg_engine) == before

    async def test_valid_upload_is_encrypted_isolated_and_read_by_the_next_decision(
        self,
        api: httpx.AsyncClient,
        keys: Keys,
        pg_engine: AsyncEngine,
        app_and_client: tuple[object, httpx.AsyncClient],
    ) -> None:
        score = {"siren": THIN, "requested_amount": "20000.00", "product": "credit_line"}
        before = await api.post(
            "/v1/score", json=score, headers={"Authorization": f"Bearer {keys.writer}"}
        )
        assert before.status_code == 200
        assert before.json()["sources"]["accounting"]["status"] == "unavailable"

        raw = _books_fec("123456.78")
        r = await api.post(
            f"/v1/companies/{THIN}/books?filename={THIN}FEC20251231.txt",
            content=raw,
            headers=_auth(keys.writer),
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["siren"] == THIN
        assert body["mode"] == "test"
        assert body["closing_date"] == "2025-12-31"
        assert body["revenue"] == "123456.78"
        assert body["balanced"] is True
        assert Decimal(body["total_assets"]) == Decimal(body["total_liabilities"]) + Decimal(
            body["equity"]
        )

        async with create_sessionmaker(pg_engine)() as session:
            row = (
                await session.scalars(select(CompanyBooks).where(CompanyBooks.id == body["id"]))
            ).one()
            assert row.tenant_id == keys.tenant_a
            assert b"706000" not in row.ciphertext
            assert zlib.compress(raw, 6) not in row.ciphertext
            state = app_and_client[0].state.b2b  # type: ignore[attr-defined]
            mine = await read_uploaded(session, state.keyring, keys.tenant_a, "test", THIN)
            assert mine is not None
            assert mine["fec"][0]["origin"] == "upload"
            # Test and live never mix, nor do tenants.
            assert await read_uploaded(session, state.keyring, keys.tenant_a, "live", THIN) is None
            assert await read_uploaded(session, state.keyring, keys.tenant_b, "test", THIN) is None

        after = await api.post(
            "/v1/score", json=score, headers={"Authorization": f"Bearer {keys.writer}"}
        )
        assert after.status_code == 200
        assert after.json()["sources"]["accounting"]["status"] == "ok"
        assert after.json()["sources"]["accounting"]["detail"] == "books uploaded by the lender"
        decision = await api.get(
            f"/v1/decisions/{after.json()['decision_id']}",
            headers={"Authorization": f"Bearer {keys.writer}"},
        )
        assert decision.json()["features"]["annual_revenue"] == pytest.approx(123456.78)
        theirs = await api.post(
            "/v1/score", json=score, headers={"Authorization": f"Bearer {keys.other_tenant}"}
        )
        assert theirs.json()["sources"]["accounting"]["status"] == "unavailable"

    async def test_a_real_exporters_file_is_accepted(
        self, api: httpx.AsyncClient, keys: Keys
    ) -> None:
        r = await api.post(
            f"/v1/companies/{THIN}/books", content=ODOO_FEC, headers=_auth(keys.live)
        )
        assert r.status_code == 201, r.text
        assert r.json()["mode"] == "live"
        assert r.json()["revenue"] == "6467.04"
        # No live provider is configured (partial data allowed): the decision reads these books.
        score = {"siren": THIN, "requested_amount": "2000.00", "product": "credit_line"}
        answer = await api.post(
            "/v1/score", json=score, headers={"Authorization": f"Bearer {keys.live}"}
        )
        sources = answer.json()["sources"]
        assert sources["accounting"]["status"] == "ok"
        assert sources["registry"]["status"] == sources["open_banking"]["status"] == "unavailable"
