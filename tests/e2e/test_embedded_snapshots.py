"""The embedded default as a new user starts it: the sandbox's consented companies are
decided on snapshots synced in the background, not on a bank call inside the budget."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from b2bscore.consents.sandbox import sandbox_directory
from b2bscore.training import world
from tests.e2e.test_processes import _env, _stop, _wait_for
from tests.servers import free_port

pytestmark = pytest.mark.e2e

DIRECTORY = 6  # drawn companies beside the scenarios: enough to see, quick to sync


def _body(siren: str) -> dict[str, str]:
    return {"siren": siren, "requested_amount": "20000.00", "product": "term_loan"}


def test_directory_companies_are_decided_on_their_snapshots(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "b2bscore", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_env(B2BSCORE_SANDBOX_DIRECTORY_SIZE=str(DIRECTORY)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    drain: threading.Thread | None = None
    try:
        key = None
        while key is None:
            line = process.stdout.readline()
            assert line or process.poll() is None, "serve exited early"
            match = re.search(r"sandbox API key: (sk_test_\S+)", line)
            key = match.group(1) if match else None
        drain = threading.Thread(target=process.stdout.read, daemon=True)
        drain.start()
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/readyz", process)

        drawn = sandbox_directory(DIRECTORY)[len(world.SCENARIOS) :]
        consented = [s for s in drawn if world.bank_consent(s)]
        assert consented, "the world gives most companies a bank consent"
        with sqlite3.connect(tmp_path / "var" / "b2bscore.db") as db:
            held = {s for (s,) in db.execute("SELECT siren FROM consents WHERE mode = 'test'")}
        # Standing consents for the consented companies of the directory, and only them.
        assert set(consented) <= held
        assert world.SCENARIOS["no_bank_consent"] not in held
        assert not (set(drawn) - set(consented)) & held

        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            deadline = time.monotonic() + 90
            bank = {}
            while time.monotonic() < deadline:
                answer = client.post("/v1/score", json=_body(consented[0])).json()
                bank = answer["sources"]["open_banking"]
                if bank["detail"] == "snapshot":
                    break
                time.sleep(1)
            assert bank["detail"] == "snapshot", bank
            assert bank["status"] == "ok"
            assert bank["snapshot"]["scopes"] == ["balances", "transactions"]
            # The same company again: the same snapshot, the same decision.
            again = client.post("/v1/score", json=_body(consented[0])).json()
            assert again["sources"]["open_banking"]["detail"] == "snapshot"
            assert again["decision"] == answer["decision"]
            assert again["probability_of_default"] == answer["probability_of_default"]

            # Outside the directory, the bank is still asked in the request.
            outsider = next(
                s for s in world.sample_sirens(50, 4_711) if world.bank_consent(s) and s not in held
            )
            other = client.post("/v1/score", json=_body(outsider)).json()
            assert other["sources"]["open_banking"]["detail"] != "snapshot"
            assert other["sources"]["open_banking"].get("snapshot") is None
    finally:
        _stop(process)
        if drain is not None:
            drain.join(timeout=10)
        process.stdout.close()
