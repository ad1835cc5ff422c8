"""`b2bscore sandbox event SIREN KIND`: move the sandbox world (see sandbox/events.py)."""

from __future__ import annotations

from typing import Annotated

import typer

# Spelled out rather than imported: the events module pulls in the world (numpy), and the
# CLI must start fast for every other command.
KINDS = ("proceedings_opened", "closed", "cash_squeeze")


def sandbox_event(
    siren: Annotated[str, typer.Argument(help="SIREN of the sandbox company.")],
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
    sandbox_url: Annotated[
        str | None,
        typer.Option(
            envvar="B2BSCORE_SANDBOX_URL",
            help="A running sandbox to tell over HTTP; else the event store file is written.",
        ),
    ] = None,
) -> None:
    """Change a sandbox company as its providers would show it (BODACC, Sirene, bank)."""
    if sandbox_url:
        import httpx

        response = httpx.post(
            f"{sandbox_url.rstrip('/')}/sandbox/v1/events",
            json={"siren": siren, "kind": kind},
            timeout=10,
        )
        if response.status_code != 201:
            typer.echo(f"sandbox refused the event: {response.text}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{kind} recorded for {response.json()['siren']} on {sandbox_url}")
        return
    from b2bscore.sandbox.events import EventStore

    store = EventStore()
    try:
        event = store.record(siren, kind)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from error
    typer.echo(f"{event.kind} recorded for {event.siren} in {store.path}")
