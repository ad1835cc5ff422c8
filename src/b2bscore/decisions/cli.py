"""`b2bscore audit ...`: verify the hash chains, rotate the data key, purge old payloads."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from b2bscore.decisions.chain import VerifyResult
    from b2bscore.decisions.crypto import DataKeyring
    from b2bscore.kit.settings import Settings

audit_app = typer.Typer(help="Audit trail: verify, rotate keys, retention.", no_args_is_help=True)

_T = TypeVar("_T")


def _settings() -> Settings:
    from b2bscore.kit.settings import Settings

    return Settings()


async def _in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
    from b2bscore.kit.db import create_engine, create_sessionmaker

    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


async def _tenant_id(session: AsyncSession, tenant: str) -> str:
    """The id of the tenant named tenant, else tenant itself taken as an id."""
    from b2bscore.tenants.repository import TenantRepository

    found = await TenantRepository(session).get_by_name(tenant)
    return found.id if found is not None else tenant


def _existing_keyring(settings: Settings) -> DataKeyring:
    """The service's keyring; never a fresh key file, which could decrypt nothing."""
    from b2bscore.decisions.crypto import KEY_FILE_NAME, DataKeyring, KeyringError

    if (
        settings.data_keys is None
        and settings.data_keys_file is None
        and not (settings.var_dir / KEY_FILE_NAME).exists()
    ):
        typer.echo(
            "no data keys: set B2BSCORE_DATA_KEYS or B2BSCORE_DATA_KEYS_FILE, or provide "
            f"{settings.var_dir / KEY_FILE_NAME}",
            err=True,
        )
        raise typer.Exit(code=2)
    try:
        return DataKeyring.from_settings(settings)
    except KeyringError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=2) from None


@audit_app.command("verify")
def verify(
    tenant: Annotated[
        str | None, typer.Option(help="Tenant name or id (default: every tenant).")
    ] = None,
    payloads: Annotated[
        bool,
        typer.Option(
            "--payloads", help="Also decrypt each stored payload and check it against its digest."
        ),
    ] = False,
) -> None:
    """Walk the hash chains; print the first broken row; exit 1 when any chain is broken."""
    from b2bscore.decisions.chain import verify_chain

    settings = _settings()
    keyring = _existing_keyring(settings) if payloads else None

    async def run(session: AsyncSession) -> VerifyResult:
        tenant_id = await _tenant_id(session, tenant) if tenant is not None else None
        return await verify_chain(session, tenant_id, keyring=keyring)

    result = asyncio.run(_in_session(settings, run))
    for broken in result.broken:
        typer.echo(
            f"BROKEN tenant={broken.tenant_id} decision={broken.decision_id} "
            f"seq={broken.seq} reason={broken.reason}"
        )
    checked = "chains and payloads" if payloads else "chains"
    if not result.ok:
        typer.echo(
            f"{len(result.broken)} of {result.tenants} tenant {checked} broken "
            f"({result.rows} rows read)"
        )
        raise typer.Exit(code=1)
    typer.echo(f"OK: {result.rows} rows in {result.tenants} tenant {checked} verified")


@audit_app.command("rotate-data-key")
def rotate_data_key() -> None:
    """Add a new AES-256-GCM data key that encrypts new payloads; old ones stay readable."""
    settings = _settings()
    keyring = _existing_keyring(settings)
    key_id = keyring.add_key()
    if keyring.file_backed:
        typer.echo(f"added data key {key_id}; restart the servers to encrypt with it")
        return
    # Keys from the environment: this command cannot change the deployment's secret.
    typer.echo(
        f"new data key {key_id}: append the line below to B2BSCORE_DATA_KEYS "
        "(comma-separated, keep every older key), then restart the servers"
    )
    typer.echo(keyring.key_spec(key_id))


@audit_app.command("generate-keys")
def generate_keys() -> None:
    """Print a new data-encryption key and tokenization key, as environment lines.

    Store them in a secret manager (or as files for B2BSCORE_DATA_KEYS_FILE and
    B2BSCORE_TOKENIZATION_KEY_FILE); nothing is written here.
    """
    import base64
    import secrets

    from b2bscore.decisions.crypto import new_key_spec

    typer.echo(f"B2BSCORE_DATA_KEYS={new_key_spec()}")
    typer.echo(f"B2BSCORE_TOKENIZATION_KEY={base64.b64encode(secrets.token_bytes(32)).decode()}")


@audit_app.command("purge-payloads")
def purge(
    older_than: Annotated[
        int, typer.Option(min=0, help="Purge payloads of decisions older than DAYS days.")
    ],
    tenant: Annotated[str | None, typer.Option(help="Tenant name or id (default: all).")] = None,
) -> None:
    """Drop the encrypted raw payloads of old decisions; decisions and chains stay intact."""
    from b2bscore.decisions.retention import purge_payloads

    settings = _settings()
    cutoff = datetime.now(UTC) - timedelta(days=older_than)

    async def run(session: AsyncSession) -> int:
        tenant_id = await _tenant_id(session, tenant) if tenant is not None else None
        count = await purge_payloads(session, cutoff, tenant_id=tenant_id)
        await session.commit()
        return count

    count = asyncio.run(_in_session(settings, run))
    typer.echo(f"purged the payloads of {count} decisions created before {cutoff.isoformat()}")
