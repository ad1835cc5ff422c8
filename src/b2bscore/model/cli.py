"""`b2bscore models ...`: the registry from the operator's command line.

Every command that changes a role verifies the bundle first, writes the assignment and
its audited event in one transaction, then posts the change notice so that every worker
switches within seconds. Output is JSON (one object per line for lists).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from b2bscore.kit.settings import Settings
    from b2bscore.model.models import ModelEvent

models_app = typer.Typer(
    help="Model registry: list, promote, rollback, shadow, canary, drift.", no_args_is_help=True
)

_T = TypeVar("_T")


def _settings() -> Settings:
    from b2bscore.kit.settings import Settings

    return Settings()


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


ActorOption = Annotated[
    str | None, typer.Option(help="Who is acting, recorded in the event (default: cli:user@host).")
]


def _print(doc: Any) -> None:
    typer.echo(json.dumps(doc, default=str, ensure_ascii=False))


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
    from b2bscore.kit.db import create_engine, create_sessionmaker, upgrade_database_async

    if settings.is_embedded:  # as `serve` does: the embedded store is created on first use
        await upgrade_database_async(settings.resolved_database_url)
    engine = create_engine(settings.resolved_database_url, pool_size=2)
    try:
        async with create_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


def _change(work: Callable[[AsyncSession, Settings], Awaitable[ModelEvent]]) -> None:
    """Run a role change, commit it with its event, post the notice, print the event."""
    from b2bscore.kit.cache import create_cache
    from b2bscore.model.bundle import BundleError
    from b2bscore.model.registry import RegistryError, notify

    settings = _settings()

    async def run(session: AsyncSession) -> ModelEvent:
        event = await work(session, settings)
        await session.commit()
        return event

    async def go() -> ModelEvent:
        event = await _with_session(settings, run)
        cache = create_cache(settings.redis_url) if settings.redis_url else None
        try:
            await notify(cache, event.id)
        finally:
            if cache is not None:
                await cache.close()
        return event

    try:
        event = asyncio.run(go())
    except BundleError as error:
        typer.echo(f"refused: the bundle does not verify ({error}); nothing changed", err=True)
        raise typer.Exit(code=1) from None
    except RegistryError as error:
        typer.echo(f"refused: {error}; nothing changed", err=True)
        raise typer.Exit(code=1) from None
    _print(_event_json(event))


def _event_json(event: ModelEvent) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "role": event.role,
        "from": event.from_model,
        "to": event.to_model,
        "detail": event.detail,
        "row_hash": event.row_hash,
    }


def _default_live(settings: Settings) -> str | None:
    """The bundle the service serves before any promotion (same rule as its start-up)."""
    from b2bscore.model.bundle import BundleError, latest_bundle_path

    if settings.model_id:
        return str(settings.model_id)
    try:
        return latest_bundle_path(settings.models_dir).name
    except BundleError:
        return None


@models_app.command("list")
def list_models() -> None:
    """Every bundle, one JSON object per line, with its role (live, shadow, canary)."""
    from b2bscore.model.registry import assignments, catalogue

    settings = _settings()
    assigned = asyncio.run(_with_session(settings, assignments))
    roles: dict[str, list[str]] = {}
    for role, row in assigned.items():
        roles.setdefault(row.model_id, []).append(role)
    default = _default_live(settings)
    if "live" not in assigned and default:
        # No promotion recorded yet: the service serves its start-up default.
        roles.setdefault(default, []).append("live")
    for info in catalogue(settings.models_dir):
        _print(info.to_json(roles.get(info.model_id, [])))


@models_app.command("show")
def show(version: Annotated[str, typer.Argument(help="Version or model id.")]) -> None:
    """Print a bundle's model card."""
    from b2bscore.model.registry import RegistryError, show_card

    try:
        typer.echo(show_card(_settings().models_dir, version), nl=False)
    except RegistryError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None


@models_app.command("verify")
def verify_bundle(version: Annotated[str, typer.Argument(help="Version or model id.")]) -> None:
    """Verify a bundle (hashes, feature schema, smoke prediction) without changing anything."""
    from b2bscore.model.bundle import BundleError
    from b2bscore.model.registry import RegistryError, resolve, verify

    try:
        bundle = verify(resolve(_settings().models_dir, version))
    except (BundleError, RegistryError) as error:
        typer.echo(f"does not verify: {error}", err=True)
        raise typer.Exit(code=1) from None
    _print({"id": bundle.model_id, "version": bundle.version, "verified": True})


@models_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Version or model id.")],
    actor: ActorOption = None,
    reason: Annotated[str, typer.Option(help="Why, recorded in the event.")] = "",
) -> None:
    """Verify a bundle and make it live for every worker of every instance."""
    from b2bscore.model import registry

    _change(
        lambda session, settings: registry.promote(
            session,
            settings.models_dir,
            version,
            actor=_actor(actor),
            reason=reason,
            default_live=_default_live(settings),
        )
    )


@models_app.command("rollback")
def rollback(actor: ActorOption = None) -> None:
    """Make the previous live version live again."""
    from b2bscore.model import registry

    _change(
        lambda session, settings: registry.rollback(
            session, settings.models_dir, actor=_actor(actor)
        )
    )


@models_app.command("shadow")
def shadow(
    version: Annotated[str | None, typer.Argument(help="Version or model id.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop shadow scoring.")] = False,
    actor: ActorOption = None,
) -> None:
    """Score every decision with a challenger too, after the answer is sent."""
    from b2bscore.model import registry

    if (version is None) == (not off):
        typer.echo("give a VERSION or --off", err=True)
        raise typer.Exit(code=2)
    _change(
        lambda session, settings: registry.set_shadow(
            session, settings.models_dir, None if off else version, actor=_actor(actor)
        )
    )


@models_app.command("canary")
def canary(
    version: Annotated[str | None, typer.Argument(help="Version or model id.")] = None,
    percent: Annotated[
        int, typer.Option(min=0, max=100, help="Share of companies (by SIREN hash).")
    ] = 0,
    tenant: Annotated[
        list[str] | None, typer.Option(help="Tenant id answered by the candidate (repeatable).")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop the canary.")] = False,
    actor: ActorOption = None,
) -> None:
    """Answer a stable share of companies (or named tenants) with a candidate."""
    from b2bscore.model import registry

    if (version is None) == (not off):
        typer.echo("give a VERSION (with --percent or --tenant) or --off", err=True)
        raise typer.Exit(code=2)
    if not off and percent == 0 and not tenant:
        typer.echo("give --percent P (1-100) or at least one --tenant", err=True)
        raise typer.Exit(code=2)
    _change(
        lambda session, settings: registry.set_canary(
            session,
            settings.models_dir,
            None if off else version,
            actor=_actor(actor),
            percent=percent,
            tenants=tenant or [],
        )
    )


@models_app.command("history")
def history(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50) -> None:
    """The model events, newest first, and whether their hash chain is intact."""
    from b2bscore.model.registry import events, verify_events

    async def work(session: AsyncSession) -> tuple[list[ModelEvent], int | None]:
        return await events(session, limit), await verify_events(session)

    rows, broken = asyncio.run(_with_session(_settings(), work))
    for event in rows:
        _print(_event_json(event))
    if broken is not None:
        typer.echo(f"model event chain broken at event {broken}", err=True)
        raise typer.Exit(code=1)


@models_app.command("compare")
def compare(
    window: Annotated[
        str | None, typer.Option(help="Only decisions of the last 7d, 24h...")
    ] = None,
) -> None:
    """Live against shadow on the same decisions: agreement, flips, PD shift, AUC."""
    from datetime import UTC, datetime

    from b2bscore.model import service

    since = datetime.now(UTC) - service.parse_window(window) if window else None
    _print(asyncio.run(_with_session(_settings(), lambda s: service.compare(s, since))))


@models_app.command("drift")
def drift(
    window: Annotated[str, typer.Option(help="Recent window: 7d, 24h, 30m.")] = "7d",
    version: Annotated[str | None, typer.Option(help="Bundle (default: the live one).")] = None,
) -> None:
    """PSI of every feature and of the score against the bundle's training reference."""
    from b2bscore.model import registry, service
    from b2bscore.model.bundle import latest_bundle_path, load_bundle

    settings = _settings()
    try:
        service.parse_window(window)
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=2) from None

    async def work(session: AsyncSession) -> dict[str, Any]:
        if version:
            path = registry.resolve(settings.models_dir, version)
        else:
            live = (await registry.assignments(session)).get("live")
            path = (
                registry.resolve(settings.models_dir, live.model_id)
                if live
                else latest_bundle_path(settings.models_dir)
            )
        bundle = load_bundle(path)
        return (await service.drift(session, bundle, window)).to_json()

    try:
        _print(asyncio.run(_with_session(settings, work)))
    except (ValueError, registry.RegistryError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None


@models_app.command("performance")
def performance(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant id.")] = None,
) -> None:
    """Realised default rate by grade and AUC over time, from recorded outcomes."""
    from b2bscore.model import service

    _print(asyncio.run(_with_session(_settings(), lambda s: service.performance(s, tenant))))


@models_app.command("parity")
def parity(
    sample: Annotated[int, typer.Option(min=1, max=100_000, help="Decisions to replay.")] = 100,
) -> None:
    """Replay audited decisions through today's feature code and their own bundle."""
    from b2bscore.decisions.crypto import KEY_FILE_NAME, DataKeyring
    from b2bscore.model import parity as parity_check

    settings = _settings()
    if settings.data_keys is None and not (settings.var_dir / KEY_FILE_NAME).exists():
        # Never a fresh key file: it could decrypt nothing.
        typer.echo(
            f"no data keys: set B2BSCORE_DATA_KEYS or provide {settings.var_dir / KEY_FILE_NAME}",
            err=True,
        )
        raise typer.Exit(code=2)
    keyring = DataKeyring.from_settings(settings)
    report = asyncio.run(
        _with_session(
            settings,
            lambda s: parity_check.run(s, keyring, settings.models_dir, sample=sample),
        )
    )
    _print(report)
    if report["differing"]:
        raise typer.Exit(code=1)


@models_app.command("addenda")
def addenda(
    version: Annotated[list[str], typer.Argument(help="Shipped versions or model ids.")],
    workers: Annotated[int, typer.Option(min=1, max=32)] = 2,
) -> None:
    """Regenerate shipped bundles' cards and drift references outside their hashed files."""
    from b2bscore.model.registry import resolve
    from b2bscore.training.card import add_shipped_addenda

    settings = _settings()
    roots: list[Path] = [resolve(settings.models_dir, v) for v in version]
    for path in add_shipped_addenda(
        roots, workers=workers, progress=lambda m: typer.echo(m, err=True)
    ):
        typer.echo(str(path))
