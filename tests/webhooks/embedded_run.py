"""Run by test_embedded.py in its own process: the embedded default (SQLite, procrastinate's
in-memory connector) delivers an event with the same task functions as production."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from b2bscore.app import build_state, close_state
from b2bscore.kit.db import upgrade_database
from b2bscore.kit.settings import Settings
from b2bscore.tenants import service as tenants
from b2bscore.webhooks import service as webhooks
from b2bscore.webhooks.schemas import EndpointCreate


async def main(var_dir: Path, receiver_url: str) -> None:
    settings = Settings(var_dir=var_dir, models_dir=Path(sys.argv[3]))
    assert settings.is_embedded
    state = await build_state(settings)
    assert state.jobs is not None
    assert state.jobs.in_memory
    assert state.jobs.runs_in_process
    try:
        async with state.sessionmaker() as session:
            tenant = await tenants.create_tenant(session, "embedded")
            _, secret = await webhooks.create_endpoint(
                session,
                state.keyring,
                tenant_id=tenant.id,
                mode="test",
                body=EndpointCreate(url=receiver_url, event_types=["company.closed"]),
                max_endpoints=5,
            )
            emitted = await webhooks.emit_event(
                session,
                tenant_id=tenant.id,
                mode="test",
                event_type="company.closed",
                ordering_key="958806150",
                data={
                    "monitored_company_id": "m",
                    "siren": "958806150",
                    "external_reference": None,
                    "detected_at": datetime.now(UTC),
                },
            )
            await session.commit()
        await webhooks.dispatch(state.jobs, emitted)
        # The in-process worker, until the in-memory queue is empty.
        await state.jobs.run_worker(state, wait=False)
        print(secret)
    finally:
        await close_state(state)


if __name__ == "__main__":
    upgrade_database(Settings(var_dir=Path(sys.argv[1])).resolved_database_url)
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
