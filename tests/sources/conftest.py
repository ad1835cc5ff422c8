"""Fixtures of the sources tests: the fault-injecting providers over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from b2bscore.kit.settings import Settings
from b2bscore.sources.clients import ProviderClients
from tests.servers import serve_in_thread
from tests.sources.fake_providers import create_fake_app


@pytest.fixture(scope="session")
def fake_app() -> FastAPI:
    """The fault-injecting provider app (its state.hits counts calls)."""
    return create_fake_app()


@pytest.fixture(scope="session")
def fake_url(fake_app: FastAPI) -> Iterator[str]:
    """Base URL of the fake providers, laid out like the sandbox."""
    with serve_in_thread(fake_app) as url:
        yield url


@pytest.fixture
def hits(fake_app: FastAPI) -> Any:
    """Calls received by the fake providers, per (route, siren)."""
    return fake_app.state.hits


@pytest.fixture
async def fake_clients(fake_url: str) -> AsyncIterator[ProviderClients]:
    """Provider clients on the fake providers, closed after the test."""
    clients = ProviderClients.sandbox(fake_url, Settings())
    yield clients
    await clients.aclose()
