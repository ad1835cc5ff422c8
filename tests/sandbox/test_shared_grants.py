"""The sandbox banks' grants are shared by every sandbox process (one SQLite file).

A sandbox served in this process and a `b2bscore sandbox --workers 2` in another, both on
one grant file: a consent page shown by one is answered at the other, its code exchanged
at the first, its token read at the second, and a revocation or a fault switched at one
is seen by all.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from b2bscore.sandbox.app import create_sandbox_app
from b2bscore.sandbox.oauth import Grants
from b2bscore.sandbox.profile import SandboxProfile
from tests.consents.conftest import parse_form
from tests.servers import free_port, serve_in_thread

SIREN = "123456782"  # the world's no-consent company: only a grant opens its accounts
CLIENT = "b2bscore"
REDIRECT = "http://lender.test/callback"


@pytest.fixture(scope="module")
def grants_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grant file both sandboxes open."""
    return tmp_path_factory.mktemp("grants") / "sandbox_grants.sqlite3"


@pytest.fixture(scope="module")
def here(grants_file: Path) -> Iterator[str]:
    """A sandbox served in this process."""
    grants = Grants(grants_file)
    with serve_in_thread(create_sandbox_app(SandboxProfile.preset("zero"), grants=grants)) as url:
        yield url
    grants.close()


@pytest.fixture(scope="module")
def there(grants_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`b2bscore sandbox --workers 2` in other processes, on the same grant file."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("B2BSCORE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        B2BSCORE_SANDBOX_GRANTS_FILE=str(grants_file),
        B2BSCORE_SANDBOX_PROFILE="zero",
        B2BSCORE_VAR_DIR=str(tmp_path_factory.mktemp("var")),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "sandbox", "--port", str(port), "--workers", "2"],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"sandbox exited with {process.returncode}"
            assert time.monotonic() < deadline, "sandbox not up"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _consent(client: httpx.Client, page_at: str, answer_at: str) -> tuple[str, str]:
    """Show the page at one sandbox, answer it at another; (code, verifier)."""
    verifier = secrets.token_urlsafe(48)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT,
            "redirect_uri": REDIRECT,
            "scope": "balances transactions",
            "state": "s1",
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
            "login_hint": SIREN,
        }
    )
    page = client.get(f"{page_at}/oauth/sandbox-stet14/authorize?{query}")
    assert page.status_code == 200
    form = parse_form(page.text)
    data: dict[str, Any] = dict(form.hidden)
    data["accounts"] = [v for n, v in form.boxes if n == "accounts"][:1]
    data["scopes"] = [v for n, v in form.boxes if n == "scopes"]
    data["action"] = "accept"
    # The CSRF cookie is the host's (127.0.0.1), whatever the port: the browser sends it.
    answer = client.post(f"{answer_at}{form.action}", data=data)
    assert answer.status_code == 303, answer.text
    location = urlsplit(answer.headers["location"])
    return parse_qs(location.query)["code"][0], verifier


def _exchange(client: httpx.Client, at: str, code: str, verifier: str) -> httpx.Response:
    return client.post(
        f"{at}/oauth/sandbox-stet14/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": CLIENT,
            "redirect_uri": REDIRECT,
        },
    )


def _accounts(client: httpx.Client, at: str, token: str) -> httpx.Response:
    return client.get(f"{at}/stet/v1/accounts", headers={"Authorization": f"Bearer {token}"})


def test_a_grant_made_at_one_process_works_at_the_others(here: str, there: str) -> None:
    with httpx.Client(timeout=10) as client:
        code, verifier = _consent(client, page_at=here, answer_at=there)
        tokens = _exchange(client, here, code, verifier)
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        # Read at the other process, on new connections (either of its two workers).
        for _ in range(6):
            with httpx.Client(timeout=10) as fresh:
                accounts = _accounts(fresh, there, body["access_token"])
            assert accounts.status_code == 200
            assert len(accounts.json()["accounts"]) == 1  # the one account ticked
        # The code is single use across processes: a second exchange elsewhere revokes.
        again = _exchange(client, there, code, verifier)
        assert again.status_code == 400
        assert again.json()["error_description"] == "code already used"
        assert _accounts(client, here, body["access_token"]).status_code == 401


def test_refresh_revocation_and_faults_reach_every_process(here: str, there: str) -> None:
    with httpx.Client(timeout=10) as client:
        code, verifier = _consent(client, page_at=there, answer_at=here)
        body = _exchange(client, there, code, verifier).json()
        refreshed = client.post(
            f"{here}/oauth/sandbox-stet14/token",
            data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        )
        assert refreshed.status_code == 200
        access = refreshed.json()["access_token"]
        assert _accounts(client, there, access).status_code == 200
        # The token endpoints of every process fail once one is told to.
        assert client.put(f"{here}/oauth/_admin/token-fault?fault=error").status_code == 204
        try:
            for _ in range(4):
                down = client.post(
                    f"{there}/oauth/sandbox-stet14/token",
                    data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
                )
                assert down.status_code == 503
        finally:
            client.put(f"{there}/oauth/_admin/token-fault?fault=")
        # RFC 7009 at one process: every process refuses the tokens from then on.
        revoked = client.post(
            f"{there}/oauth/sandbox-stet14/revoke", data={"token": body["refresh_token"]}
        )
        assert revoked.status_code == 200
        for _ in range(4):
            assert _accounts(client, there, access).status_code == 401
        assert _accounts(client, here, access).status_code == 401
        gone = client.post(
            f"{here}/oauth/sandbox-stet14/token",
            data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        )
        assert gone.json()["error"] == "invalid_grant"


def test_a_page_answers_once_across_processes(here: str, there: str) -> None:
    with httpx.Client(timeout=10) as client:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT,
                "redirect_uri": REDIRECT,
                "scope": "balances",
                "state": "s2",
                "code_challenge": _challenge(secrets.token_urlsafe(48)),
                "code_challenge_method": "S256",
                "login_hint": SIREN,
            }
        )
        page = client.get(f"{there}/oauth/sandbox-stet14/authorize?{query}")
        form = parse_form(page.text)
        data: dict[str, Any] = dict(form.hidden)
        data["accounts"] = [v for n, v in form.boxes if n == "accounts"]
        data["scopes"] = ["balances"]
        data["action"] = "accept"
        assert client.post(f"{here}{form.action}", data=data).status_code == 303
        replay = client.post(f"{there}{form.action}", data=data)
        assert replay.status_code == 400
        assert re.search("invalid or expired|already answered", replay.text)
