"""Batches on real PostgreSQL, decided by two `b2bscore worker` processes, one killed mid-batch."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text

from b2bscore.decisions.models import Decision
from b2bscore.kit.settings import Settings
from b2bscore.kit.state import AppState
from b2bscore.portfolio.models import BatchRow
from b2bscore.training.world import sample_sirens
from tests.receivers import webhook_receiver
from tests.webhooks.conftest import FLOW_DATA_KEYS, FlowKeys, bearer

URL = "/v1/batches"
CHUNK_ROWS = 40


@dataclass
class Workers:
    """Worker processes of the batch queue; more can be started."""

    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]
    log_dir: Path

    def start(self, name: str) -> subprocess.Popen[bytes]:
        # A file, not a pipe: nobody reads a pipe, and a full one would stall the worker.
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = self._spawn(name, log)
        self.processes.append(process)
        return process

    def _spawn(self, name: str, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "b2bscore",
                "worker",
                "--queue",
                "batches",
                "--metrics-port",
                "0",
                "--concurrency",
                "4",
                "--name",
                name,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@pytest.fixture(scope="module")
def batch_workers(
    flow_settings: Settings, flow_state: AppState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    """Two worker processes on the `batches` queue of the session's database."""
    env = {
        **os.environ,
        "B2BSCORE_DATABASE_URL": str(flow_settings.database_url),
        "B2BSCORE_REDIS_URL": str(flow_settings.redis_url),
        "B2BSCORE_SANDBOX_URL": str(flow_settings.sandbox_url),
        "B2BSCORE_MODELS_DIR": str(flow_settings.models_dir),
        "B2BSCORE_VAR_DIR": str(flow_settings.var_dir),
        "B2BSCORE_DATA_KEYS": FLOW_DATA_KEYS,
        "B2BSCORE_JOBS_POLL_SECONDS": "0.2",
        "B2BSCORE_JOBS_STALLED_SECONDS": "3",
        "B2BSCORE_BATCH_CHUNK_ROWS": str(CHUNK_ROWS),
        "B2BSCORE_BATCH_ROW_CONCURRENCY": "8",
        # Retries of failed rows within a test: after 1.5 s, then 3 s.
        "B2BSCORE_BATCH_ROW_RETRY_SECONDS": "1.5",
        "B2BSCORE_BATCH_ROW_MAX_ATTEMPTS": "3",
    }
    workers = Workers(env, [], tmp_path_factory.mktemp("worker-logs"))
    workers.start("batch-1")
    workers.start("batch-2")
    yield workers
    for process in workers.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers.processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["siren", "requested_amount", "product", "external_reference"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def _wait_completed(
    api: httpx.AsyncClient,
    key: str,
    batch_id: str,
    timeout: float = 120,  # noqa: ASYNC109
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = (await api.get(f"{URL}/{batch_id}", headers=bearer(key))).json()
        if body["status"] == "completed":
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"batch not completed: {body}")


async def _post(
    api: httpx.AsyncClient, key: str, content: bytes, content_type: str = "text/csv"
) -> httpx.Response:
    return await api.post(
        URL, content=content, headers={**bearer(key), "Content-Type": content_type}
    )


class TestCreateBatch:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        response = await flow_api.post(URL, content=b"x", headers={"Content-Type": "text/csv"})
        assert response.status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        assert (await _post(flow_api, flow_keys.reader_only, b"siren\n1\n")).status_code == 403

    async def test_415_for_json(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        response = await _post(flow_api, flow_keys.writer, b"{}", "application/json")
        assert response.status_code == 415

    async def test_413_over_the_row_limit(
        self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys
    ) -> None:
        row = b"958806150,100.00,term_loan,\n"
        content = b"siren,requested_amount,product,external_reference\n" + row * 100_001
        response = await _post(flow_api, flow_keys.writer, content)
        assert response.status_code == 413
        assert "100000" in response.json()["detail"]

    async def test_valid_jsonl_good_and_bad_rows(
        self,
        flow_api: httpx.AsyncClient,
        flow_keys: FlowKeys,
        batch_workers: Workers,
    ) -> None:
        loan = {"requested_amount": "25000.00", "product": "term_loan"}
        lines = [
            {"siren": "958806150", **loan, "external_reference": "r1"},
            {"siren": "123456789", **loan},
            {"siren": "527295240", "requested_amount": 12.5, "product": "bnpl"},
            {"siren": "527295240", **loan, "colour": "red"},
        ]
        content = b"\n".join(orjson.dumps(line) for line in lines) + b"\nnot json\n"
        with webhook_receiver() as receiver:
            endpoint = await flow_api.post(
                "/v1/webhook-endpoints",
                json={"url": receiver.url, "event_types": ["batch.completed"]},
                headers=bearer(flow_keys.writer),
            )
            assert endpoint.status_code == 201, endpoint.text
            receiver.secrets["e"] = endpoint.json()["secret"]
            response = await _post(flow_api, flow_keys.writer, content, "application/x-ndjson")
            assert response.status_code == 202, response.text
            batch = response.json()
            assert batch["status"] == "queued"
            assert batch["counts"]["total"] == 5
            done = await _wait_completed(flow_api, flow_keys.writer, batch["id"])
            assert done["counts"] == {
                "total": 5,
                "pending": 0,
                "decided": 1,
                "invalid": 4,
                "failed": 0,
            }
            results = await flow_api.get(
                f"{URL}/{batch['id']}/results",
                params={"format": "jsonl"},
                headers=bearer(flow_keys.writer),
            )
            rows = [orjson.loads(line) for line in results.content.splitlines()]
            assert [r["row"] for r in rows] == [1, 2, 3, 4, 5]
            assert rows[0]["status"] == "decided"
            assert rows[0]["external_reference"] == "r1"
            assert rows[0]["decision_id"]
            assert rows[0]["score"] is not None
            assert rows[1]["errors"][0]["field"] == "siren"
            assert rows[2]["errors"][0]["field"] == "requested_amount"
            assert rows[3]["errors"] == [{"field": "colour", "message": "unknown field"}]
            assert rows[4]["errors"][0]["field"] == "row"
            await receiver.wait_for(lambda r: len(r.ok()) == 1)
            told = receiver.ok()[0]
            assert told.verified == {"e": True}
            assert told.payload["data"]["batch_id"] == batch["id"]


class TestReadBatch:
    async def test_401(self, flow_api: httpx.AsyncClient) -> None:
        assert (await flow_api.get(f"{URL}/x")).status_code == 401

    async def test_403(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        assert (
            await flow_api.get(f"{URL}/x", headers=bearer(flow_keys.writer_only))
        ).status_code == 403

    async def test_404_other_tenant(self, flow_api: httpx.AsyncClient, flow_keys: FlowKeys) -> None:
        created = await _post(
            flow_api,
            flow_keys.writer,
            _csv(
                [
                    {
                        "siren": "958806150",
                        "requested_amount": "10.00",
                        "product": "bnpl",
                        "external_reference": "",
                    }
                ]
            ),
        )
        batch_id = created.json()["id"]
        for key in (flow_keys.other_tenant, flow_keys.live):
            assert (await flow_api.get(f"{URL}/{batch_id}", headers=bearer(key))).status_code == 404
            results = await flow_api.get(f"{URL}/{batch_id}/results", headers=bearer(key))
            assert results.status_code == 404


class TestBatchWorkers:
    async def test_two_workers_one_killed_nothing_lost_nothing_twice(
        self,
        flow_api: httpx.AsyncClient,
        flow_keys: FlowKeys,
        flow_state: AppState,
        batch_workers: Workers,
    ) -> None:
        sirens = sample_sirens(240, seed=424242)
        rows = [
            {
                "siren": s,
                "requested_amount": "15000.00",
                "product": "term_loan",
                "external_reference": f"x{i}",
            }
            for i, s in enumerate(sirens)
        ]
        rows[7]["siren"] = "123456789"  # one bad row among them
        started = time.monotonic()
        response = await _post(flow_api, flow_keys.writer, _csv(rows))
        assert response.status_code == 202
        batch_id = response.json()["id"]
        # Kill one worker (SIGKILL: no goodbye) once the batch is well under way.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = (
                await flow_api.get(f"{URL}/{batch_id}", headers=bearer(flow_keys.writer))
            ).json()
            if body["counts"]["decided"] >= 60:
                break
            await asyncio.sleep(0.05)
        victim = batch_workers.processes[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        done = await _wait_completed(flow_api, flow_keys.writer, batch_id, timeout=240)
        elapsed = time.monotonic() - started
        assert done["counts"]["decided"] == 239
        assert done["counts"]["invalid"] == 1
        async with flow_state.sessionmaker() as session:
            decisions = await session.scalar(
                select(func.count())
                .select_from(Decision)
                .where(Decision.idempotency_key.like(f"batch:{batch_id}:%"))
            )
        assert decisions == 239  # one decision per valid row, none twice
        results = await flow_api.get(f"{URL}/{batch_id}/results", headers=bearer(flow_keys.writer))
        lines = list(csv.DictReader(io.StringIO(results.text)))
        assert len(lines) == 240
        assert len({r["decision_id"] for r in lines if r["decision_id"]}) == 239
        print(
            f"\n240-row batch, 2 workers (one killed): {elapsed:.1f} s, "
            f"{239 / elapsed:.0f} decisions/s"
        )


# The audit store refuses the decisions of the SIRENs listed in batch_faults (a real
# PostgreSQL error, check_violation, raised by a trigger on the decisions table).
FAULTS_SQL = [
    "CREATE TABLE IF NOT EXISTS batch_faults (siren varchar(9) PRIMARY KEY)",
    """CREATE OR REPLACE FUNCTION refuse_faulty_sirens() RETURNS trigger AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM batch_faults WHERE siren = NEW.siren) THEN
            RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS refuse_faulty_sirens ON decisions",
    """CREATE TRIGGER refuse_faulty_sirens BEFORE INSERT ON decisions
    FOR EACH ROW EXECUTE FUNCTION refuse_faulty_sirens()""",
]


class TestFailedRows:
    async def test_retried_then_failed_with_reason_and_counted(
        self,
        flow_api: httpx.AsyncClient,
        flow_keys: FlowKeys,
        flow_state: AppState,
        batch_workers: Workers,
    ) -> None:
        fine, transient, broken = sample_sirens(3, seed=777_001)
        async with flow_state.sessionmaker() as session:
            for statement in FAULTS_SQL:
                await session.execute(text(statement))
            await session.execute(
                text("INSERT INTO batch_faults VALUES (:a), (:b)"), {"a": transient, "b": broken}
            )
            await session.commit()
        try:
            rows = [
                {"siren": s, "requested_amount": "5000.00", "product": "term_loan"}
                for s in (fine, transient, broken)
            ]
            with webhook_receiver() as receiver:
                endpoint = await flow_api.post(
                    "/v1/webhook-endpoints",
                    json={"url": receiver.url, "event_types": ["batch.completed"]},
                    headers=bearer(flow_keys.writer),
                )
                receiver.secrets["e"] = endpoint.json()["secret"]
                content = b"\n".join(orjson.dumps(r) for r in rows) + b"\n"
                created = await _post(flow_api, flow_keys.writer, content, "application/x-ndjson")
                batch_id = created.json()["id"]
                # The transient fault ends once its row failed a first time.
                deadline = time.monotonic() + 60
                while True:
                    async with flow_state.sessionmaker() as session:
                        first = await session.get(BatchRow, (batch_id, 2))
                    if first is not None and first.attempts >= 1:
                        break
                    assert time.monotonic() < deadline, "the transient row never failed"
                    await asyncio.sleep(0.05)
                assert first.status == "pending"
                assert first.retry_at is not None
                async with flow_state.sessionmaker() as session:
                    await session.execute(
                        text("DELETE FROM batch_faults WHERE siren = :s"), {"s": transient}
                    )
                    await session.commit()
                done = await _wait_completed(flow_api, flow_keys.writer, batch_id, timeout=90)
                assert done["counts"] == {
                    "total": 3,
                    "pending": 0,
                    "decided": 2,
                    "invalid": 0,
                    "failed": 1,
                }
                results = await flow_api.get(
                    f"{URL}/{batch_id}/results",
                    params={"format": "jsonl"},
                    headers=bearer(flow_keys.writer),
                )
                lines = [orjson.loads(line) for line in results.content.splitlines()]
                assert [line["status"] for line in lines] == ["decided", "decided", "failed"]
                assert lines[1]["errors"] is None  # decided on its second try
                assert lines[2]["decision_id"] is None
                (error,) = lines[2]["errors"]
                assert error["field"] == "decision"
                assert error["message"].startswith("audit_unavailable")
                assert error["message"].endswith("(attempt 3 of 3)")
                csv_lines = list(
                    csv.DictReader(
                        io.StringIO(
                            (
                                await flow_api.get(
                                    f"{URL}/{batch_id}/results", headers=bearer(flow_keys.writer)
                                )
                            ).text
                        )
                    )
                )
                assert csv_lines[2]["status"] == "failed"
                assert "attempt 3 of 3" in csv_lines[2]["errors"]
                async with flow_state.sessionmaker() as session:
                    stored = await session.get(BatchRow, (batch_id, 3))
                    assert stored is not None
                    assert (stored.attempts, stored.retry_at) == (3, None)
                    decided = await session.scalar(
                        select(func.count())
                        .select_from(Decision)
                        .where(Decision.idempotency_key.like(f"batch:{batch_id}:%"))
                    )
                assert decided == 2
                await receiver.wait_for(lambda r: len(r.ok()) == 1)
                data = receiver.ok()[0].payload["data"]
                assert (data["decided_rows"], data["failed_rows"]) == (2, 1)
        finally:
            async with flow_state.sessionmaker() as session:
                await session.execute(text(FAULTS_SQL[2]))
                await session.commit()
