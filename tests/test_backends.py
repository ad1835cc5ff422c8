"""How the suite picks its PostgreSQL and Redis (tests/backends.py), on real servers."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy.engine import make_url

from tests.backends import (
    PG_ADMIN_ENV,
    REDIS_ENV,
    BackendError,
    database_url,
    embedded_redis,
    postgres_admin_choice,
    redis_for_session,
)
from tests.servers import free_port


def test_a_configured_postgresql_that_refuses_the_role_is_reported(
    postgres_admin_dsn: str,
) -> None:
    # The session's own server (standard or embedded), asked with a role it does not know.
    refused = make_url(postgres_admin_dsn).set(username="no_such_role_b2bscore")
    dsn = refused.render_as_string(hide_password=False)
    with pytest.raises(BackendError) as caught:
        postgres_admin_choice({PG_ADMIN_ENV: dsn})
    message = str(caught.value)
    assert "refused" in message
    assert "no_such_role_b2bscore" in message
    assert PG_ADMIN_ENV in message


def test_a_configured_postgresql_nobody_listens_on_is_named() -> None:
    port = free_port()
    with pytest.raises(BackendError) as caught:
        postgres_admin_choice({PG_ADMIN_ENV: f"postgresql://someone:secret@127.0.0.1:{port}/x"})
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "secret" not in message  # the address, never the password


def test_a_configured_postgresql_that_answers_is_used(postgres_admin_dsn: str) -> None:
    assert postgres_admin_choice({PG_ADMIN_ENV: postgres_admin_dsn}) == postgres_admin_dsn


def test_embedded_is_asked_for_by_name() -> None:
    assert postgres_admin_choice({PG_ADMIN_ENV: "embedded"}) is None


def test_database_urls_keep_tcp_and_socket_hosts() -> None:
    assert (
        database_url("postgresql://postgres@127.0.0.1:5432/postgres", "db1")
        == "postgresql+asyncpg://postgres@127.0.0.1:5432/db1"
    )
    socket_url = make_url(database_url("postgresql://postgres:@/postgres?host=/run/pg", "db2"))
    assert socket_url.database == "db2"
    assert socket_url.query["host"] == "/run/pg"


def test_a_configured_redis_is_used_as_it_is_and_never_flushed() -> None:
    with embedded_redis() as url:
        client = redis.Redis.from_url(url)
        try:
            client.set("someone-else:key", b"kept")
            with redis_for_session({REDIS_ENV: url}) as chosen:
                assert chosen == url
            assert client.get("someone-else:key") == b"kept"
        finally:
            client.close()


def test_a_redis_that_refuses_the_credentials_is_reported() -> None:
    with embedded_redis(password="right-password") as url:
        wrong = url.replace(":right-password@", ":wrong-password@", 1)
        with pytest.raises(BackendError) as caught, redis_for_session({REDIS_ENV: wrong}):
            pass
    message = str(caught.value)
    assert "refused the credentials" in message
    assert "wrong-password" not in message


def test_a_configured_redis_nobody_listens_on_is_named() -> None:
    url = f"redis://127.0.0.1:{free_port()}/3"
    with pytest.raises(BackendError) as caught, redis_for_session({REDIS_ENV: url}):
        pass
    assert url in str(caught.value)


def test_without_configuration_the_session_starts_its_own_redis() -> None:
    with redis_for_session({}) as url:
        assert url.startswith("unix://")
        client = redis.Redis.from_url(url)
        try:
            assert client.ping()
            assert client.dbsize() == 0
        finally:
            client.close()
    with pytest.raises(redis.ConnectionError):  # stopped with the session that started it
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
