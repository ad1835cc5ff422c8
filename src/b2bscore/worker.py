"""`b2bscore worker`: runs queued and scheduled work (deliveries, sweeps, batches)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once (default B2BSCORE_JOBS_CONCURRENCY).")
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus /metrics on this port (0: off).")
    ] = 9101,
    name: Annotated[str | None, typer.Option(help="Worker name in logs and job records.")] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(help="Only these queues (webhooks, monitoring, batches, consents, default)."),
    ] = None,
) -> None:
    """Run a worker of the job engine (PostgreSQL); start as many as you like, anywhere."""
    from b2bscore.kit.logging import configure_logging
    from b2bscore.kit.settings import Settings

    configure_logging()
    settings = Settings()
    if settings.is_embedded:
        typer.echo(
            "The embedded default (SQLite) runs its background work inside `b2bscore serve`; "
            "a separate worker needs B2BSCORE_DATABASE_URL=postgresql+asyncpg://...",
            err=True,
        )
        raise typer.Exit(2)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    asyncio.run(_run(settings, concurrency, name, queue or None))


async def _run(
    settings: object, concurrency: int | None, name: str | None, queues: list[str] | None
) -> None:
    from b2bscore.app import build_state, close_state
    from b2bscore.kit.settings import Settings

    assert isinstance(settings, Settings)
    state = await build_state(settings)
    assert state.jobs is not None
    depth = asyncio.create_task(state.jobs.publish_depth_forever())
    try:
        await state.jobs.run_worker(
            state, concurrency=concurrency, install_signal_handlers=True, name=name, queues=queues
        )
    finally:
        depth.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await depth
        await close_state(state)
