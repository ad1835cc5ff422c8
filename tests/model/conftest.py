"""An API stack on its own database whose models directory holds registry candidates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.model.registry_helpers import LIVE_DEFAULT, make_models_dir
from tests.security.conftest import Stack, start_stack


@pytest.fixture(scope="module")
async def lifecycle(
    postgres_admin_dsn: str,
    redis_url: str,
    sandbox_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """A stack (own database: the registry's roles are global) with candidate bundles."""
    models_dir = make_models_dir(tmp_path_factory.mktemp("models"))
    async with start_stack(
        postgres_admin_dsn,
        redis_url,
        sandbox_url,
        tmp_path_factory.mktemp("var"),
        "models",
        models_dir=models_dir,
        model_id=LIVE_DEFAULT,  # the candidates carry higher versions than the shipped one
    ) as built:
        yield built
