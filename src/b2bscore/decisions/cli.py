"""`b2bscore audit ...`: verify the chains, publish checkpoints, rotate keys, purge payloads."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from b2bscore.decisions.chain import ChainHead, VerifyResult
    from b2bscore.decisions.chainkeys import ChainKeyring
    from b2bscore.decisions.checkpoints import CheckpointLog, Published
    from b2bscore.decisions.crypto import DataKeyring
    from b2bscore.kit.settings import Settings

audit_app = typer.Typer(
    help="Audit trail: verify, checkpoints, rotate keys, retention.", no_args_is_help=True
)

_T = TypeVar("_T")


def _settings() -> Settings:
    from b2bscore.kit.settings import Settings

    return Settings()


async def _in_session(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[_T]], *, owner: bool = False
) -> _T:
    from b2bscore.kit.db import create_engine, create_sessionmaker

    # owner: the migration (owner) role, for what the service's role may not do.
    url = settings.resolved_migration_database_url if owner else settings.resolved_database_url
    engine = create_engine(url)
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


def _existing_chain_keys(settings: Settings) -> ChainKeyring:
    """The service's chain keys; never a fresh key file, which could verify nothing."""
    from b2bscore.decisions.chainkeys import CHAIN_KEY_FILE_NAME, ChainKeyring

    chain_keys = ChainKeyring.existing(settings)
    if chain_keys is None:
        typer.echo(
            "no audit chain keys: set B2BSCORE_AUDIT_KEYS or provide "
            f"{settings.var_dir / CHAIN_KEY_FILE_NAME}",
            err=True,
        )
        raise typer.Exit(code=2)
    return chain_keys


def _checkpoint_log(
    settings: Settings, path: Path | None, public_keys: list[Path]
) -> CheckpointLog:
    """The stored checkpoints, verified with the given public keys or the service's own."""
    from b2bscore.decisions.checkpoints import (
        CheckpointSigner,
        CheckpointStore,
        load_public_key,
        verify_log,
    )

    store = CheckpointStore.at(path or settings.resolved_checkpoint_path)
    keys = [load_public_key(p.read_bytes()) for p in public_keys]
    if not keys:
        signer = CheckpointSigner.existing(settings)
        if signer is None:
            if not store.exists():
                return verify_log([], [])
            typer.echo(
                "no key to check the checkpoints: pass --public-key or set "
                "B2BSCORE_AUDIT_SIGNING_KEY",
                err=True,
            )
            raise typer.Exit(code=2)
        keys = [signer.public_key]
    return verify_log(store.read(), keys)


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
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoint file or directory (default: the configured one)."),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(help="PEM public key the checkpoints are signed with (repeatable)."),
    ] = None,
) -> None:
    """Walk the chains against the latest checkpoint; name what is wrong; exit 1 if anything is."""
    from b2bscore.decisions.chain import verify_chain

    settings = _settings()
    chain_keys = _existing_chain_keys(settings)
    keyring = _existing_keyring(settings) if payloads else None
    log = _checkpoint_log(settings, checkpoints, public_key or [])
    latest = log.latest
    anchor: dict[tuple[str, str], ChainHead] | None = None if latest is None else latest.heads()

    async def run(session: AsyncSession) -> VerifyResult:
        tenant_id = await _tenant_id(session, tenant) if tenant is not None else None
        heads = anchor
        if heads is not None and tenant_id is not None:
            heads = {key: head for key, head in heads.items() if key[0] == tenant_id}
        return await verify_chain(
            session, tenant_id, chain_keys=chain_keys, keyring=keyring, checkpoint=heads
        )

    result = asyncio.run(_in_session(settings, run))
    for problem in log.problems:
        typer.echo(f"CHECKPOINT {problem}")
    if latest is None:
        typer.echo(
            "WARNING: no checkpoint to verify against: truncated or deleted chains go unseen "
            "(publish one with `b2bscore audit checkpoint`)"
        )
    else:
        typer.echo(f"against checkpoint {latest.number} of {latest.record['time']}")
    for broken in result.broken:
        decision = broken.decision_id or "-"
        typer.echo(
            f"BROKEN tenant={broken.tenant_id} mode={broken.mode} decision={decision} "
            f"seq={broken.seq} reason={broken.reason}"
        )
    checked = "chains and payloads" if payloads else "chains"
    if not result.ok or log.problems:
        typer.echo(
            f"{len(result.broken)} problems in {result.chains} {checked}, "
            f"{len(log.problems)} in {log.count} checkpoints ({result.rows} rows read)"
        )
        raise typer.Exit(code=1)
    typer.echo(f"OK: {result.rows} rows in {result.chains} {checked} verified")


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign and publish a checkpoint of every chain head now."""
    from b2bscore.decisions.checkpoints import (
        CheckpointError,
        CheckpointSigner,
        CheckpointStore,
        publish,
    )

    settings = _settings()
    signer = CheckpointSigner.from_settings(settings)
    store = CheckpointStore.at(settings.resolved_checkpoint_path)

    async def run(session: AsyncSession) -> Published | None:
        return await publish(session, signer, store)

    try:
        published = asyncio.run(_in_session(settings, run))
    except CheckpointError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    if published is None:  # another host published this number first
        typer.echo("a checkpoint was published concurrently; run again", err=True)
        raise typer.Exit(code=1)
    typer.echo(
        f"checkpoint {published.number}: {len(published.record['heads'])} chain heads "
        f"signed by {signer.key_id} to {store.path}"
    )


@audit_app.command("public-key")
def public_key() -> None:
    """Print the PEM public key that checkpoints are signed with, for auditors."""
    from b2bscore.decisions.checkpoints import CheckpointSigner, public_key_pem

    signer = CheckpointSigner.existing(_settings())
    if signer is None:
        typer.echo("no checkpoint signing key yet", err=True)
        raise typer.Exit(code=2)
    typer.echo(public_key_pem(signer.public_key), nl=False)


@audit_app.command("rotate-chain-key")
def rotate_chain_key() -> None:
    """Add a new HMAC key that links new audit rows; rows linked before keep verifying."""
    settings = _settings()
    chain_keys = _existing_chain_keys(settings)
    key_id = chain_keys.add_key()
    if chain_keys.file_backed:
        typer.echo(f"added audit chain key {key_id}; restart the servers to link with it")
        return
    typer.echo(
        f"new audit chain key {key_id}: append the line below to B2BSCORE_AUDIT_KEYS "
        "(comma-separated, keep every older key), then restart the servers"
    )
    typer.echo(chain_keys.key_spec(key_id))


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
    """Print every key production mode needs, as environment lines.

    The data-encryption key, the tokenization key, the audit chain key and the checkpoint
    signing key. Store them in a secret manager (or as files for B2BSCORE_DATA_KEYS_FILE
    and B2BSCORE_TOKENIZATION_KEY_FILE); nothing is written here.
    """
    import base64
    import secrets

    from b2bscore.decisions.crypto import new_key_spec

    def fresh() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    typer.echo(f"B2BSCORE_DATA_KEYS={new_key_spec()}")
    typer.echo(f"B2BSCORE_TOKENIZATION_KEY={fresh()}")
    typer.echo(f"B2BSCORE_AUDIT_KEYS=c1:{fresh()}")
    # An Ed25519 private key is any 32-byte seed.
    typer.echo(f"B2BSCORE_AUDIT_SIGNING_KEY={fresh()}")


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

    # The service's role may not UPDATE audit rows at all: the purge runs as the owner.
    count = asyncio.run(_in_session(settings, run, owner=True))
    typer.echo(f"purged the payloads of {count} decisions created before {cutoff.isoformat()}")
