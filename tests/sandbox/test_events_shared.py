"""The sandbox world moves for every sandbox process: two `b2bscore sandbox` processes
sharing one event store (B2BSCORE_SANDBOX_EVENTS_FILE) show an event recorded at either,
or by `b2bscore sandbox event`, on their BODACC, its feed and Sirene."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

BODACC = "/bodacc/api/explore/v2.1/catalog/datasets/annonces-commerciales/records"
SIREN = "732829320"  # a valid SIREN no other test moves


@pytest.fixture(scope="module")
def two_sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Path]]:
    """Two sandbox processes on one event store file."""
    store = tmp_path_factory.mktemp("shared-events") / "events.jsonl"
    env = {**os.environ, "B2BSCORE_SANDBOX_EVENTS_FILE": str(store)}
    env.pop("B2BSCORE_SANDBOX_URL", None)
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "b2bscore", "sandbox", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 60
        for url, proc in zip(urls, procs, strict=True):
            while True:
                assert proc.poll() is None, "sandbox died on start-up"
                assert time.monotonic() < deadline, "sandbox did not start"
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        yield urls, store
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


def _collective(url: str) -> list[dict[str, object]]:
    body = httpx.get(f"{url}{BODACC}", params={"refine": f"registre:{SIREN}", "limit": -1}).json()
    return [r for r in body["results"] if r["familleavis"] == "collective"]


def _state(url: str) -> str:
    unit = httpx.get(f"{url}/sirene/v3.11/siren/{SIREN}").json()["uniteLegale"]
    state: str = unit["periodesUniteLegale"][0]["etatAdministratifUniteLegale"]
    return state


def _closed(url: str) -> bool:
    return _state(url) == "C"


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never seen"
        time.sleep(0.05)


def test_an_event_recorded_at_one_process_moves_the_other(
    two_sandboxes: tuple[list[str], Path],
) -> None:
    (first, second), store = two_sandboxes
    before = len(_collective(second))
    recorded = httpx.post(
        f"{first}/sandbox/v1/events", json={"siren": SIREN, "kind": "proceedings_opened"}
    )
    assert recorded.status_code == 201
    today = datetime.now(UTC).date().isoformat()
    _eventually(lambda: len(_collective(second)) == before + 1)
    assert _collective(second)[0]["dateparution"] == today
    listed = httpx.get(f"{second}/sandbox/v1/events/{SIREN}").json()
    assert [e["kind"] for e in listed["events"]] == ["proceedings_opened"]
    # BODACC's feed, as portfolio.registry_feed asks it, on the other process too.
    feed = httpx.get(
        f"{second}{BODACC}",
        params={"where": f"dateparution>=date'{today}'", "refine": "familleavis:collective"},
    ).json()
    assert any(SIREN in r["registre"] for r in feed["results"])
    assert store.read_text().count(SIREN) == 1


def test_the_cli_writes_the_store_both_processes_read(
    two_sandboxes: tuple[list[str], Path],
) -> None:
    urls, store = two_sandboxes
    env = {**os.environ, "B2BSCORE_SANDBOX_EVENTS_FILE": str(store)}
    env.pop("B2BSCORE_SANDBOX_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "b2bscore", "sandbox", "event", SIREN, "closed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for url in urls:
        _eventually(functools.partial(_closed, url))
