"""Rough figures for the work after the decision (not a gate; the machine may be shared).

- event -> first delivery latency (p50, p99): events emitted one at a time into the outbox,
  delivered by an in-process procrastinate worker on PostgreSQL to a local receiver;
- batch throughput: a CSV batch decided by the in-process worker against the sandbox.

Usage: python loadtests/flows_bench.py [--events 300] [--rows 2000]
Needs PostgreSQL at 127.0.0.1:5432 (a scratch database is created and dropped) and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.receivers import webhook_receiver  # noqa: E402
from tests.servers import serve_in_thread  # noqa: E402

from b2bscore.app import build_state, close_state  # noqa: E402
from b2bscore.kit.db import upgrade_database  # noqa: E402
from b2bscore.kit.settings import Settings  # noqa: E402
from b2bscore.portfolio import batches  # noqa: E402
from b2bscore.sandbox.app import create_sandbox_app  # noqa: E402
from b2bscore.sandbox.profile import SandboxProfile  # noqa: E402
from b2bscore.tenants import service as tenants  # noqa: E402
from b2bscore.tenants.service import Principal  # noqa: E402
from b2bscore.training.world import sample_sirens  # noqa: E402
from b2bscore.webhooks import service as webhooks  # noqa: E402
from b2bscore.webhooks.schemas import EndpointCreate  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(events: int, rows: int) -> None:
    name = f"flows_bench_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        await asyncio.to_thread(upgrade_database, url)
        with serve_in_thread(create_sandbox_app(SandboxProfile.preset("zero"))) as sandbox:
            settings = Settings(
                database_url=url,
                sandbox_url=sandbox,
                var_dir=Path(tempfile.mkdtemp()),
                jobs_poll_seconds=0.5,
                jobs_in_process=False,
            )
            state = await build_state(settings)
            assert state.jobs is not None
            worker = asyncio.create_task(state.jobs.run_worker(state, concurrency=16))
            try:
                if events:
                    await _deliveries(state, events)
                if rows:
                    await _batch(state, rows)
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
                await close_state(state)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _tenant(state: Any) -> Principal:
    async with state.sessionmaker() as session:
        tenant = await tenants.create_tenant(session, f"bench-{secrets.token_hex(3)}")
        key_row, _ = await tenants.create_api_key(session, tenant, "test", ["score:write"])
        await session.commit()
    return Principal(tenant.id, tenant.name, key_row.id, "test", frozenset({"score:write"}), None)


async def _deliveries(state: Any, count: int) -> None:
    principal = await _tenant(state)
    with webhook_receiver() as receiver:
        async with state.sessionmaker() as session:
            await webhooks.create_endpoint(
                session,
                state.keyring,
                tenant_id=principal.tenant_id,
                mode="test",
                body=EndpointCreate(url=receiver.url, event_types=["company.closed"]),
                max_endpoints=10,
            )
            await session.commit()
        committed: dict[str, float] = {}
        sirens = sample_sirens(count, seed=99)
        started = time.perf_counter()
        for siren in sirens:
            async with state.sessionmaker() as session:
                emitted = await webhooks.emit_event(
                    session,
                    tenant_id=principal.tenant_id,
                    mode="test",
                    event_type="company.closed",
                    ordering_key=siren,
                    data={
                        "monitored_company_id": "bench",
                        "siren": siren,
                        "external_reference": None,
                        "detected_at": "2026-12-04T00:00:00Z",
                    },
                )
                await session.commit()
            committed[emitted.events[0].id] = time.time()
            await webhooks.dispatch(state.jobs, emitted)
            await asyncio.sleep(0.01)
        await receiver.wait_for(lambda r: len(r.ok()) >= count, timeout=300)
        elapsed = time.perf_counter() - started
        latency = [
            (r.at - committed[r.headers["webhook-id"]]) * 1000
            for r in receiver.ok()
            if r.headers["webhook-id"] in committed
        ]
        print(
            f"deliveries: {count} events in {elapsed:.1f} s ({count / elapsed:.0f}/s); "
            f"event->first delivery p50 {statistics.median(latency):.1f} ms, "
            f"p99 {_pct(latency, 0.99):.1f} ms"
        )


async def _batch(state: Any, rows: int) -> None:
    principal = await _tenant(state)
    lines = ["siren,requested_amount,product"]
    lines += [f"{s},20000.00,term_loan" for s in sample_sirens(rows, seed=7)]
    started = time.perf_counter()
    batch = await batches.create_batch(
        state, principal, ("\n".join(lines) + "\n").encode(), "text/csv"
    )
    while True:
        async with state.sessionmaker() as session:
            from b2bscore.portfolio.models import Batch

            row = await session.get(Batch, batch.id)
            assert row is not None
            if row.status == "completed":
                break
        await asyncio.sleep(0.5)
    elapsed = time.perf_counter() - started
    rate = rows / elapsed
    print(f"batch: {rows} rows, one in-process worker: {elapsed:.1f} s, {rate:.0f} decisions/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rows))
