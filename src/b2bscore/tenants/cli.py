"""`b2bscore keys ...`: create, list and revoke API keys; set a tenant's rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from b2bscore.kit.cache import Cache
    from b2bscore.kit.settings import Settings

keys_app = typer.Typer(help="API keys and per-tenant rate limits.", no_args_is_help=True)

_T = TypeVar("_T")


def _settings() -> Settings:
    from b2bscore.kit.settings import Settings

    return Settings()


async def _in_session(work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
    """Run work in one session on the configured database, then release the engine."""
    from b2bscore.kit.db import create_engine, create_sessionmaker

    engine = create_engine(_settings().resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=1)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new).")],
    mode: Annotated[str, typer.Option(help="test (sandbox world) or live.")] = "test",
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: score:write, decisions:read, admin.")
    ] = "score:write,decisions:read",
    expires_in_days: Annotated[int | None, typer.Option(help="Expiry, in days.")] = None,
) -> None:
    """Create an API key; the key itself is printed once, as the last line."""
    if mode not in {"test", "live"}:
        raise typer.BadParameter("mode must be test or live", param_hint="--mode")
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
    unknown = set(scope_list) - {"score:write", "decisions:read", "admin"}
    if unknown:
        raise typer.BadParameter(
            f"unknown scopes: {', '.join(sorted(unknown))}", param_hint="--scopes"
        )
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None

    async def create(session: AsyncSession) -> tuple[str, str]:
        from b2bscore.tenants import service as tenants

        found = await tenants.create_tenant(session, tenant)
        api_key, key = await tenants.create_api_key(
            session, found, mode, scope_list, expires_at=expires_at
        )
        await session.commit()
        return str(api_key.id), key

    key_id, key = asyncio.run(_in_session(create))
    typer.echo(f"created key {key_id} for tenant {tenant} ({mode}; {', '.join(scope_list)})")
    typer.echo("store it now: it is shown only once")
    typer.echo(key)


@keys_app.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="Tenant name.")]) -> None:
    """The tenant's keys: id, prefix, mode, scopes, dates; never the key or its hash."""

    async def rows(session: AsyncSession) -> list[list[str]] | None:
        from b2bscore.tenants import service as tenants
        from b2bscore.tenants.repository import TenantRepository

        found = await TenantRepository(session).get_by_name(tenant)
        if found is None:
            return None
        return [
            [
                k.id,
                k.prefix + "...",
                k.mode,
                ",".join(k.scopes),
                _when(k.created_at),
                _when(k.expires_at),
                _when(k.revoked_at),
            ]
            for k in await tenants.list_api_keys(session, found.id)
        ]

    table = asyncio.run(_in_session(rows))
    if table is None:
        raise _fail(f"no tenant named {tenant!r}")
    header = ["id", "prefix", "mode", "scopes", "created", "expires", "revoked"]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _shared_cache(settings: Settings) -> Cache | None:
    # Only a shared cache reaches the running servers; an in-process one would die with
    # this command, so there is nothing to announce to.
    from b2bscore.kit.cache import RedisCache

    return RedisCache(settings.redis_url) if settings.redis_url else None


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Id of the key to revoke.")]) -> None:
    """Revoke a key; with Redis configured, every server refuses it from the next request."""
    settings = _settings()

    async def revoke(session: AsyncSession) -> str | None:
        from b2bscore.tenants import service as tenants

        cache = _shared_cache(settings)
        try:
            api_key = await tenants.revoke_api_key(session, key_id, cache=cache)
            await session.commit()
        finally:
            if cache is not None:
                await cache.close()
        return None if api_key is None else api_key.prefix

    prefix = asyncio.run(_in_session(revoke))
    if prefix is None:
        raise _fail(f"no key with id {key_id!r}")
    typer.echo(f"revoked key {key_id} ({prefix}...)")
    if not settings.redis_url:
        typer.echo("no Redis configured: other server processes refuse it within 5 s")


@keys_app.command("set-rate-limit")
def keys_set_rate_limit(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    per_minute: Annotated[
        int | None,
        typer.Option(
            help="Requests per minute of the tenant (all its keys of a mode together); "
            "omit to use the service default."
        ),
    ] = None,
) -> None:
    """Set the requests per minute the tenant may make, in each mode (test, live)."""
    if per_minute is not None and per_minute < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--per-minute")

    async def update(session: AsyncSession) -> bool:
        from b2bscore.tenants import service as tenants
        from b2bscore.tenants.repository import TenantRepository

        found = await TenantRepository(session).get_by_name(tenant)
        if found is None:
            return False
        await tenants.set_rate_limit(session, found.id, per_minute)
        await session.commit()
        return True

    if not asyncio.run(_in_session(update)):
        raise _fail(f"no tenant named {tenant!r}")
    limit = (
        f"{per_minute} requests per minute in each mode" if per_minute else "the service default"
    )
    typer.echo(f"tenant {tenant}: {limit} (servers apply it within 5 s)")


@keys_app.command("set-partial-data")
def keys_set_partial_data(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    allow: Annotated[
        bool,
        typer.Option(
            "--allow/--deny",
            help="Let the tenant's keys score when no provider of their mode is configured.",
        ),
    ],
) -> None:
    """Allow (or deny, the default) scoring on partial data when no provider is configured."""

    async def update(session: AsyncSession) -> bool:
        from b2bscore.tenants import service as tenants
        from b2bscore.tenants.repository import TenantRepository

        found = await TenantRepository(session).get_by_name(tenant)
        if found is None:
            return False
        await tenants.set_partial_data(session, found.id, allow)
        await session.commit()
        return True

    if not asyncio.run(_in_session(update)):
        raise _fail(f"no tenant named {tenant!r}")
    state = "may score on partial data" if allow else "is refused (503) without providers"
    typer.echo(f"tenant {tenant}: {state} (servers apply it within 5 s)")
