"""Hostile requests: nesting bombs, broken UTF-8, header injection, oversized fields and keys."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.security.conftest import (
    Stack,
    admin_execute,
    assert_problem_json,
    bearer,
    score_body,
)

JSON = {"Content-Type": "application/json"}


async def _post_raw(stack: Stack, content: bytes, key: str, **headers: str) -> httpx.Response:
    return await stack.client.post(
        "/v1/score", content=content, headers=bearer(key, **JSON, **headers)
    )


@pytest.mark.parametrize("depth", [10_000, 8_000, 2_000])
@pytest.mark.parametrize("shape", ["array", "object"])
async def test_deeply_nested_json_is_a_client_error(stack: Stack, depth: int, shape: str) -> None:
    if shape == "array":
        body = b"[" * depth + b"]" * depth
    else:
        body = b'{"a":' * depth + b"1" + b"}" * depth
    response = await _post_raw(stack, body, stack.keys.writer)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert_problem_json(response)
    if len(body) > stack.settings.max_body_bytes:
        assert response.status_code == 413


async def test_nesting_inside_a_valid_field_is_a_client_error(stack: Stack) -> None:
    nested = "[" * 5_000 + "]" * 5_000
    body = (
        '{"siren": "111111118", "requested_amount": "100.00", "product": "bnpl", '
        f'"external_reference": {nested}}}'
    )
    response = await _post_raw(stack, body.encode(), stack.keys.writer)
    # The JSON parser gives up on the depth (400) or the field is refused (422).
    assert response.status_code in {400, 422}, response.text[:300]
    assert_problem_json(response)


@pytest.mark.parametrize(
    "body",
    [
        b'{"siren": "\xff\xfe111111118", "requested_amount": "100.00", "product": "bnpl"}',
        b'{"siren": "111111118", "requested_amount": "100.00", "product": "bnpl\xc3"}',
        b"\xef\xbb\xbf" + b'{"siren": "111111118"}',
        b'{"siren": "\\ud800", "requested_amount": "100.00", "product": "bnpl"}',
        b"\x00" * 64,
    ],
)
async def test_invalid_utf8_and_encodings_are_a_client_error(stack: Stack, body: bytes) -> None:
    response = await _post_raw(stack, body, stack.keys.writer)
    assert response.status_code in {400, 422}, response.text[:300]
    assert_problem_json(response)


@pytest.mark.parametrize(
    "value",
    [
        "abc\r\nX-Injected: 1",
        "abc\nSet-Cookie: a=b",
        "abc\x00def",
        "abc\x7f",
        "k" * 129,
        "\u202eevil",
    ],
)
async def test_idempotency_key_injection_is_refused(stack: Stack, value: str) -> None:
    # Raw header bytes: httpx would refuse to build most of these itself.
    raw_headers = [
        (b"authorization", f"Bearer {stack.keys.writer}".encode()),
        (b"content-type", b"application/json"),
        (b"idempotency-key", value.encode("utf-8")),
    ]
    scope_request = httpx.Request(
        "POST", "http://api.test/v1/score", headers=raw_headers, json=score_body()
    )
    response = await stack.client.send(scope_request)
    assert response.status_code == 422, response.text
    problem = assert_problem_json(response)
    assert "Idempotency-Key" in {e["field"] for e in problem.get("errors", [])}
    assert "x-injected" not in response.headers
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("siren", "status"),
    [("1" * 21, 422), ("1" * 10_000, 422), ("1" * 20_000, 413)],
)
async def test_very_long_sirens(stack: Stack, siren: str, status: int) -> None:
    response = await stack.client.post(
        "/v1/score", json=score_body(siren), headers=bearer(stack.keys.writer)
    )
    assert response.status_code == status, response.text[:300]
    assert_problem_json(response)


async def test_a_siren_padded_with_spaces_is_refused(stack: Stack) -> None:
    response = await stack.client.post(
        "/v1/score", json=score_body("111 111 118" + " " * 5_000), headers=bearer(stack.keys.writer)
    )
    assert response.status_code == 422, response.text[:300]


@pytest.mark.parametrize(
    "key",
    [
        "sk_test_" + "a" * 10_000,
        "sk_live_" + "a" * 193,
        "x" * 60_000,
        "sk_test_" + secrets.token_urlsafe(32) + "\u00e9",
        "sk_test_" + secrets.token_urlsafe(32) + " extra",
    ],
)
async def test_very_long_and_odd_bearer_keys_are_401(stack: Stack, key: str) -> None:
    request = httpx.Request(
        "POST",
        "http://api.test/v1/score",
        headers=[
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ],
        json=score_body(),
    )
    response = await stack.client.send(request)
    assert response.status_code == 401, response.text[:300]
    assert_problem_json(response)


async def test_malformed_keys_never_touch_the_database(stack: Stack) -> None:
    malformed = ["sk_test_short", "sk_prod_" + "a" * 43, "x" * 300, "sk_test_" + "a" * 500]
    db = stack.db_name
    # Database gone: a key that needed it could only fail with 503 (or hang); a malformed
    # key is refused before, with 401.
    await admin_execute(stack.admin_dsn, f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
    await admin_execute(
        stack.admin_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        db,
    )
    try:
        for key in malformed:
            response = await stack.client.get("/v1/decisions", headers=bearer(key))
            assert response.status_code == 401, response.text
        # The control: a well-formed unknown key does need the database.
        unknown = await stack.client.get(
            "/v1/decisions", headers=bearer("sk_test_" + secrets.token_urlsafe(32))
        )
        assert unknown.status_code >= 500
        assert_problem_json(unknown)
    finally:
        await admin_execute(stack.admin_dsn, f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
