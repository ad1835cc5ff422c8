"""`b2bscore consents ...`: a tenant's allow-list of redirect URIs."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

consents_app = typer.Typer(
    help="Open-banking consents: redirect allow-lists.", no_args_is_help=True
)


async def _allow(tenant: str, mode: str, uri: str) -> str | None:
    from b2bscore.consents.service import allow_redirect
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.kit.settings import Settings
    from b2bscore.tenants.models import utcnow
    from b2bscore.tenants.repository import TenantRepository

    engine = create_engine(Settings().resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            found = await TenantRepository(session).get_by_name(tenant)
            if found is None:
                return f"no tenant named {tenant!r}"
            try:
                await allow_redirect(session, found.id, mode, uri, utcnow())
            except ValueError as error:
                return str(error)
            await session.commit()
    finally:
        await engine.dispose()
    return None


@consents_app.command("allow-redirect")
def allow_redirect_command(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    uri: Annotated[str, typer.Argument(help="The exact redirect_uri to allow.")],
    mode: Annotated[str, typer.Option(help="test or live (live: https only).")] = "test",
) -> None:
    """Allow a redirect_uri for a tenant's consents in one mode."""
    if mode not in {"test", "live"}:
        typer.echo("mode must be test or live", err=True)
        raise typer.Exit(code=1)
    problem = asyncio.run(_allow(tenant, mode, uri))
    if problem is not None:
        typer.echo(problem, err=True)
        raise typer.Exit(code=1)
    typer.echo(f"allowed {uri} for {tenant} ({mode})")
