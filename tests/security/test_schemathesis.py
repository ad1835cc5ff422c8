"""Property-based attack of the API over its own OpenAPI schema (schemathesis).

The real service runs under uvicorn on loopback, with PostgreSQL, Redis and the sandbox;
schemathesis sends schema-derived and schema-violating requests with a valid sandbox
key. Whatever it sends: never a 5xx, and every 4xx is application/problem+json.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis

# schemathesis imports its OpenAPI machinery lazily, at the first schema load; pytest
# rewrites a plugin's modules as they are imported, with ast.parse. On CPython 3.11 the
# AST constructor's recursion counter is shared between threads, so a parse in a server
# thread at the same moment (3.11 tracebacks parse source lines to place their carets)
# fails with "AST constructor recursion depth mismatch". Imported here, at collection,
# before any server thread exists.
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from b2bscore.app import create_app
from b2bscore.kit.db import create_engine
from b2bscore.kit.settings import Settings
from tests.security.conftest import MODELS_DIR, create_keys
from tests.servers import serve_in_thread

MAX_EXAMPLES = 30


async def _sandbox_key(url: str) -> str:
    engine = create_engine(url, pool_size=1)
    try:
        return (await create_keys(engine)).writer
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def served(
    postgres_url: str, sandbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(base URL, sandbox key) of the service running under uvicorn."""
    key = asyncio.run(_sandbox_key(postgres_url))
    app_settings = Settings(
        database_url=postgres_url,
        # The embedded default's in-process cache: thousands of keyless requests would
        # otherwise fill the per-address counters that the other tests' servers share in
        # Redis, and turn their next minute of 401 checks into 429s.
        redis_url=None,
        sandbox_url=sandbox_url,
        var_dir=Path(tmp_path_factory.mktemp("var")),
        models_dir=MODELS_DIR,
        rate_limit_per_minute=100_000,
        unauthenticated_rate_limit_per_minute=100_000,
    )
    with serve_in_thread(create_app(app_settings)) as url:
        yield url, key


Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def _operations(url: str) -> list[Operation]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    return operations


def _attack(url: str, key: str, operation: Operation, mode: GenerationMode) -> None:
    # schemathesis's pytest plugin does not run under pytest 9: drive hypothesis directly.
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def attack(case: schemathesis.Case[Operation]) -> None:
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        where = (
            f"{mode.value} {case.method} {case.formatted_path} "
            f"{case.body if case.body is not None else ''!r:.200} "
            f"-> {response.status_code}: {response.text[:300]}"
        )
        assert response.status_code < 500, where
        if response.status_code >= 400:
            content_type = (response.headers.get("content-type") or [""])[0]
            assert content_type.startswith("application/problem+json"), where
            assert "Traceback" not in response.text, where

    attack()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_server_error_and_problem_json_for_client_errors(
    served: tuple[str, str], mode: GenerationMode
) -> None:
    """Every operation, with schema-valid (positive) and schema-violating (negative) input."""
    url, key = served
    operations = _operations(url)
    assert {"/v1/score", "/v1/decisions/{decision_id}/replay"} <= {o.path for o in operations}
    attacked = 0
    for operation in operations:
        try:
            _attack(url, key, operation, mode)
        except Unsatisfiable:
            # Nothing to violate in an operation without parameters or body (e.g. /healthz).
            assert mode is GenerationMode.NEGATIVE
            continue
        attacked += 1
    assert attacked >= 4
