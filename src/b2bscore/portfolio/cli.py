"""`b2bscore monitor run` (a sweep now) and `b2bscore batch FILE` (a batch through the API)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

monitor_app = typer.Typer(help="Portfolio monitoring.", no_args_is_help=True)


@monitor_app.command("run")
def monitor_run(
    siren: Annotated[str | None, typer.Option(help="Only the watches of this SIREN.")] = None,
    concurrency: Annotated[int, typer.Option(help="Companies checked at once.")] = 8,
) -> None:
    """Check every watched company now (all tenants), then deliver what it emitted."""
    from b2bscore.kit.settings import Settings

    counts = asyncio.run(_sweep(Settings(), siren, concurrency))
    typer.echo(
        f"{counts.pop('checked', 0)} companies checked; events: "
        + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
    )


async def _sweep(settings: object, siren: str | None, concurrency: int) -> Counter[str]:
    from b2bscore.app import build_state, close_state
    from b2bscore.kit.settings import Settings
    from b2bscore.portfolio.service import sweep

    assert isinstance(settings, Settings)
    state = await build_state(settings)
    counts: Counter[str] = Counter()
    try:
        with typer.progressbar(length=0, label="checking") as bar:
            outcomes = await sweep(state, siren=siren, concurrency=concurrency, progress=bar.update)
        counts["checked"] = len(outcomes)
        for outcome in outcomes:
            counts.update(outcome.events)
        if state.jobs is not None and state.jobs.in_memory:
            # The embedded queue lives in this process: deliver before it exits.
            await state.jobs.run_worker(state, wait=False)
    finally:
        await close_state(state)
    return counts


def batch(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSONL.")],
    url: Annotated[str, typer.Option(envvar="B2BSCORE_API_URL", help="The API.")] = (
        "http://127.0.0.1:8000"
    ),
    api_key: Annotated[
        str | None,
        typer.Option(envvar="B2BSCORE_API_KEY", help="Default: the embedded sandbox key."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Results file (default FILE.results.*).")] = None,
    poll_seconds: Annotated[float, typer.Option(help="Progress poll interval.")] = 1.0,
) -> None:
    """Send a batch to the API, follow its progress, download its results."""
    import httpx

    from b2bscore.kit.settings import Settings

    key = api_key
    if key is None:
        key_file = Settings().var_dir / "sandbox_key"
        if not key_file.exists():
            typer.echo("no API key: pass --api-key or set B2BSCORE_API_KEY", err=True)
            raise typer.Exit(2)
        key = key_file.read_text().strip()
    fmt = "jsonl" if file.suffix.lower() in {".jsonl", ".ndjson"} else "csv"
    content_type = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        response = client.post(
            "/v1/batches", content=file.read_bytes(), headers={"Content-Type": content_type}
        )
        if response.status_code != 202:
            typer.echo(f"batch refused ({response.status_code}): {response.text}", err=True)
            raise typer.Exit(1)
        batch_id = response.json()["id"]
        total = response.json()["counts"]["total"]
        typer.echo(f"batch {batch_id}: {total} rows")
        done = 0
        with typer.progressbar(length=total, label="deciding") as bar:
            while True:
                state = client.get(f"/v1/batches/{batch_id}").json()
                counts = state["counts"]
                now_done = total - counts["pending"]
                bar.update(now_done - done)
                done = now_done
                if state["status"] == "completed":
                    break
                time.sleep(poll_seconds)
        target = out or file.with_name(f"{file.stem}.results.{fmt}")
        with (
            client.stream("GET", f"/v1/batches/{batch_id}/results", params={"format": fmt}) as r,
            target.open("wb") as handle,
        ):
            for chunk in r.iter_bytes():
                handle.write(chunk)
    typer.echo(
        f"decided {counts['decided']}, invalid {counts['invalid']}, failed {counts['failed']}; "
        f"results in {target}"
    )
