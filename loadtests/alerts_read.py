"""The console's alerts read (WebhookRepository.events) on a large events table.

Run: `.venv/bin/python loadtests/alerts_read.py [--events 200000]`. Creates a database of
its own on the local PostgreSQL (dropped at the end), fills `events` with one tenant's
monitoring alerts in both modes, other tenants' and other kinds of events, then times the
two reads of the console's monitoring pages with and without the index of migration 0011:
the list (100 companies, 3 alerts each) and one company's page (50 alerts). Prints medians
and p95 in milliseconds. Not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtests.harness import PG_ADMIN_DSN, pg_url  # noqa: E402

from b2bscore.console.service import ALERTS_LISTED, ALERTS_SHOWN, COMPANY_EVENTS  # noqa: E402
from b2bscore.kit.db import create_engine, create_sessionmaker, upgrade_database  # noqa: E402
from b2bscore.webhooks.repository import WebhookRepository  # noqa: E402

COMPANIES = 1_000
SHOWN = 100  # companies on the console's list
RUNS = 40
INDEX = "ix_events_tenant_mode_key_created"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _seed(dsn: str, total: int) -> tuple[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        tenants = [f"t{i}-{secrets.token_hex(4)}" for i in range(4)]
        await conn.executemany(
            "INSERT INTO tenants (id, name, created_at, allow_partial_data)"
            " VALUES ($1, $2, $3, $4)",
            [(t, t, now, False) for t in tenants],
        )
        target = tenants[0]
        sirens = [f"{100_000_000 + i * 7:09d}" for i in range(COMPANIES)]
        data = json.dumps({"siren": "x", "detected_at": now.isoformat()})
        rows = []
        for i in range(total):
            share = i % 10
            # 60 % the target tenant's test alerts, 15 % its live ones, 15 % other tenants',
            # 10 % batch and consent events of the target: the read must skip all but the first.
            tenant = tenants[1 + i % 3] if share == 8 else target
            mode = "live" if share in (6, 7) else "test"
            kind = "batch.completed" if share == 9 else COMPANY_EVENTS[i % len(COMPANY_EVENTS)]
            key = sirens[(i * 7919) % COMPANIES] if kind != "batch.completed" else f"batch:{i}"
            at = now - timedelta(seconds=total - i)
            rows.append((f"msg_{i:032x}", tenant, mode, kind, key, data, at))
        await conn.copy_records_to_table(
            "events",
            records=rows,
            columns=["id", "tenant_id", "mode", "type", "ordering_key", "data", "created_at"],
        )
        await conn.execute("ANALYZE events")
        return target, sirens
    finally:
        await conn.close()


async def _time(work: Callable[[], Awaitable[object]]) -> list[float]:
    await work()  # warm the cache and the plan
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def main(total: int) -> None:
    """Seed, then time both reads with the index and without it."""
    name = f"b2bscore_alerts_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_url(name)
    dsn = pg_url(name, "postgresql")
    engine = create_engine(url, pool_size=2)
    try:
        await asyncio.to_thread(upgrade_database, url)
        target, sirens = await _seed(dsn, total)
        print(f"events: {total}, companies of the tenant: {COMPANIES}, runs: {RUNS}")
        sessions = create_sessionmaker(engine)

        async def listing() -> object:
            async with sessions() as session:
                return await WebhookRepository(session).events(
                    target, "test", sirens[:SHOWN], types=COMPANY_EVENTS, per_key=ALERTS_LISTED
                )

        async def company() -> object:
            async with sessions() as session:
                return await WebhookRepository(session).events(
                    target, "test", sirens[:1], types=COMPANY_EVENTS, per_key=ALERTS_SHOWN
                )

        for label in ("with the index", "without the index"):
            if label == "without the index":
                conn = await asyncpg.connect(dsn)
                await conn.execute(f"DROP INDEX {INDEX}")
                await conn.execute("ANALYZE events")
                await conn.close()
            for page, work in (("list, 100 companies", listing), ("one company", company)):
                times = await _time(work)
                print(
                    f"{label:18} {page:20}: median {statistics.median(times):7.2f} ms, "
                    f"p95 {_pct(times, 0.95):7.2f} ms"
                )
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().events))
