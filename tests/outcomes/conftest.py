"""An API stack on its own database for the outcome tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.security.conftest import Stack, start_stack


@pytest.fixture(scope="module")
async def stack(
    postgres_admin_dsn: str,
    redis_url: str,
    sandbox_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """A stack shared by the tests of one module."""
    async with start_stack(
        postgres_admin_dsn, redis_url, sandbox_url, tmp_path_factory.mktemp("var"), "outcomes"
    ) as built:
        yield built
