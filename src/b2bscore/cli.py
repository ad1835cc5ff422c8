"""The b2bscore command line: serve, sandbox, train, evaluate, db, keys, audit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from b2bscore.consents.cli import consents_app
from b2bscore.decisions.cli import audit_app
from b2bscore.decisions.roles import grant_app_role_command
from b2bscore.model.cli import models_app
from b2bscore.portfolio.cli import batch, monitor_app
from b2bscore.sandbox.cli import sandbox_event
from b2bscore.sources.cli import providers_app
from b2bscore.tenants.cli import keys_app
from b2bscore.worker import worker

app = typer.Typer(help="b2bscore: instant, explainable B2B credit decisions.", no_args_is_help=True)
db_app = typer.Typer(help="Audit store schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
db_app.command("grant-app-role")(grant_app_role_command)
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(providers_app, name="providers")
app.command("worker")(worker)
app.add_typer(monitor_app, name="monitor")
app.command("batch")(batch)
app.add_typer(models_app, name="models")
app.add_typer(consents_app, name="consents")

SANDBOX_TENANT = "sandbox"
SANDBOX_SCOPES = ("score:write", "decisions:read")


def _settings() -> Any:
    from b2bscore.kit.settings import Settings

    return Settings()


def _wait_until_up(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def _refuse_what_cannot_start(settings: Any, host: str, port: int) -> None:
    """Exit non-zero at once on a port in use or a database URL no driver can open."""
    from sqlalchemy.engine import make_url
    from uvicorn.config import STARTUP_FAILURE

    from b2bscore.kit import serving

    try:
        make_url(settings.resolved_database_url).get_dialect()
    except Exception as error:  # any reason the URL cannot name a database: say it, stop
        typer.echo(f"B2BSCORE_DATABASE_URL cannot be used: {error}", err=True)
        raise typer.Exit(STARTUP_FAILURE) from error
    if not serving.port_is_free(host, port):
        typer.echo(f"{host}:{port} is already in use", err=True)
        raise typer.Exit(STARTUP_FAILURE)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _probe_host(host: str) -> str:
    """The address to reach a server listening on host from this machine."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104


def _announce_when_ready(base_url: str, lines: list[str], stop: threading.Event) -> None:
    """Print lines once base_url/readyz answers 200; nothing if the server stops first."""
    import httpx

    started = time.monotonic()
    reported_wait = False
    while not stop.is_set():
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2.0)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            if not stop.is_set():
                typer.echo("\n".join(lines))
            return
        if response is not None and not reported_wait and time.monotonic() - started > 15:
            # Up but not ready (a database that does not answer yet): say why, keep waiting.
            typer.echo(f"waiting for {base_url}/readyz: {response.text}", err=True)
            reported_wait = True
        stop.wait(0.2)


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the parent dies, however it dies (Linux)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    # Not Linux: the finally block of serve still stops the sandbox on a clean exit.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _valid_or_new_sandbox_key(settings: Any, existing: str | None) -> str:
    """existing when it still authenticates, else a new sandbox key of the sandbox tenant."""
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.tenants import service as tenants

    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            if existing and await tenants.authenticate(session, existing) is not None:
                return existing
            tenant = await tenants.create_tenant(session, SANDBOX_TENANT)
            _, key = await tenants.create_api_key(
                session, tenant, "test", list(SANDBOX_SCOPES), name="embedded sandbox key"
            )
            await session.commit()
            return key
    finally:
        await engine.dispose()


def _sandbox_key(settings: Any) -> str:
    """The embedded default's sandbox key, created once and kept under var/ (0600)."""
    key_file: Path = settings.var_dir / "sandbox_key"
    existing = key_file.read_text().strip() if key_file.exists() else None
    key = asyncio.run(_valid_or_new_sandbox_key(settings, existing))
    if key != existing:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
    return key


async def _standing_consents(settings: Any, keyring: Any, key: str) -> int:
    """The sandbox tenant's standing test consents (consents/sandbox.py); how many are new."""
    from b2bscore.consents.sandbox import ensure_standing_consents, sandbox_directory
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.tenants import service as tenants
    from b2bscore.tenants.models import utcnow

    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            principal = await tenants.authenticate(session, key)
            if principal is None:
                return 0
            created = await ensure_standing_consents(
                session,
                settings,
                keyring,
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                sirens=sandbox_directory(settings.sandbox_directory_size),
                now=utcnow(),
            )
            await session.commit()
            return created
    finally:
        await engine.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (2 fit 2 cores).")] = 1,
    sandbox_profile: Annotated[
        str, typer.Option(help="Sandbox latency/fault profile when the sandbox is embedded.")
    ] = "zero",
) -> None:
    """Start the API; on the embedded default, with SQLite, in-process cache and sandbox."""
    from b2bscore.app import StartupRefused, load_secrets
    from b2bscore.kit import serving
    from b2bscore.kit.db import upgrade_database

    settings = _settings()
    try:
        secrets = load_secrets(settings)  # fail closed before anything starts
    except StartupRefused as refused:
        typer.echo(f"b2bscore: refusing to start: {refused}", err=True)
        raise typer.Exit(code=2) from None
    _refuse_what_cannot_start(settings, host, port)
    sandbox_process: subprocess.Popen[bytes] | None = None
    if settings.is_embedded:
        upgrade_database(settings.resolved_database_url)
    if not settings.sandbox_url:
        sandbox_port = _free_port()
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        env = {**os.environ, "B2BSCORE_SANDBOX_PROFILE": sandbox_profile}
        sandbox_process = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
            [sys.executable, "-m", "b2bscore", "sandbox", "--port", str(sandbox_port)],
            env=env,
            preexec_fn=_die_with_parent,  # no threads have been started yet
        )
        _wait_until_up(sandbox_url)
        os.environ["B2BSCORE_SANDBOX_URL"] = sandbox_url
        settings = _settings()
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="b2bscore-metrics-")
    key = _sandbox_key(settings) if settings.is_embedded else None
    if key is not None and settings.sandbox_directory_size > 0:
        # The embedded default with its own sandbox: decisions on the sandbox's consented
        # companies read snapshots synced in the background, as a live lender's would.
        asyncio.run(_standing_consents(settings, secrets.keyring, key))
        os.environ["B2BSCORE_SANDBOX_CONSENTS"] = "true"

    url = f"http://{_url_host(host)}:{port}"
    lines = [f"b2bscore listening on {url}  (docs: {url}/docs)"]
    lines.append(f"sandbox providers: {settings.sandbox_url}")
    if key:
        lines.append(f"sandbox API key: {key}")
        lines.append(
            f"try: curl -s {url}/v1/score -H 'Authorization: Bearer {key}' "
            "-H 'Content-Type: application/json' "
            '-d \'{"siren": "111111118", "requested_amount": "25000.00", '
            '"product": "term_loan"}\''
        )
    stop_announcer = threading.Event()
    threading.Thread(
        target=_announce_when_ready,
        args=(f"http://{_url_host(_probe_host(host))}:{port}", lines, stop_announcer),
        name="announce-when-ready",
        daemon=True,
    ).start()
    try:
        serving.run(
            "b2bscore.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            # httptools, with the request line and headers bounded (431) as they arrive.
            http=serving.BoundedHttpToolsProtocol,
            access_log=False,
            log_level="warning",
        )
    finally:
        stop_announcer.set()
        if sandbox_process is not None:
            sandbox_process.terminate()
            sandbox_process.wait(timeout=10)


sandbox_app = typer.Typer(help="The provider sandbox: serve it, move its world.")
app.add_typer(sandbox_app, name="sandbox")
sandbox_app.command("event")(sandbox_event)


@sandbox_app.callback(invoke_without_command=True)
def sandbox(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve the sandbox providers (STET PSD2, Sirene, BODACC, accounting) on the world."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    uvicorn.run(
        "b2bscore.sandbox.app:create_sandbox_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


@app.command()
def train(
    # The defaults reproduce the shipped bundle's model.txt byte for byte, as a new version.
    seed: Annotated[int, typer.Option(help="Seed of the companies drawn and of LightGBM.")] = 2026,
    companies: Annotated[int, typer.Option(help="Companies drawn from the world.")] = 24_000,
    out: Annotated[Path, typer.Option(help="Directory of model bundles.")] = Path("models"),
    version: Annotated[
        str | None,
        typer.Option(help="Version to write (default: one patch above the newest bundle)."),
    ] = None,
    with_outcomes: Annotated[
        bool,
        typer.Option(help="Add the decisions with a recorded outcome to the training part."),
    ] = False,
) -> None:
    """Train a new LightGBM bundle on the synthetic world; never overwrites a bundle."""
    from b2bscore.model.bundle import BundleError
    from b2bscore.model.registry import next_version
    from b2bscore.training.train import train as run_training

    model_id, new_version = (f"b2b-lgbm-{version}", version) if version else next_version(out)
    if (out / model_id).exists():
        typer.echo(
            f"refused: {out / model_id} exists and bundles are immutable (recorded decisions "
            "name them); pass another --version",
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo(f"training {model_id} into {out}", err=True)
    outcomes = _recorded_outcomes() if with_outcomes else None
    try:
        path = run_training(
            n=companies,
            seed=seed,
            out_dir=out,
            model_id=model_id,
            version=new_version,
            progress=lambda message: typer.echo(message, err=True),
            outcomes=outcomes,
        )
    except BundleError as error:
        typer.echo(f"refused: {error}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(str(path))


def _recorded_outcomes() -> Any:
    """(feature rows, default flags) of the audited decisions that have an outcome."""
    from b2bscore.kit.db import create_engine, create_sessionmaker
    from b2bscore.model.service import labelled_features

    async def load() -> Any:
        engine = create_engine(_settings().resolved_database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                return await labelled_features(session)
        finally:
            await engine.dispose()

    return asyncio.run(load())


@app.command()
def evaluate(
    model: Annotated[Path | None, typer.Option(help="Bundle directory (default: newest).")] = None,
    companies: Annotated[int, typer.Option(help="Fresh companies to evaluate on.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation draw.")] = 1_000_003,
) -> None:
    """Model AUC, KS, Brier and calibration next to the oracle's, on unseen companies."""
    from b2bscore.model.bundle import latest_bundle_path
    from b2bscore.training.evaluate import evaluate as run_evaluation

    path = model or latest_bundle_path(_settings().models_dir)
    typer.echo(json.dumps(run_evaluation(path, companies, seed), indent=2, default=str))


@app.command("evaluate-dataset")
def evaluate_dataset(
    path: Annotated[Path, typer.Argument(help="Labelled table: ARFF or CSV.", exists=True)],
    label: Annotated[str, typer.Option(help="Name of the 0/1 label column.")],
    folds: Annotated[int, typer.Option(help="Folds per repeat.")] = 10,
    repeats: Annotated[int, typer.Option(help="Repeats of the stratified split.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the splits and the models.")] = 42,
) -> None:
    """Repeated stratified k-fold AUC of the pipeline's model on a real table (JSON last)."""
    from b2bscore.training.crossval import evaluate_dataset as run_cv

    result = run_cv(path, label, folds=folds, repeats=repeats, seed=seed)
    typer.echo(json.dumps(result, default=str))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the migrations as the owner: B2BSCORE_MIGRATION_DATABASE_URL, else DATABASE_URL."""
    from b2bscore.kit.db import upgrade_database

    settings = _settings()
    upgrade_database(settings.resolved_migration_database_url, revision)
    typer.echo(f"database at {revision}")


def main() -> None:
    """Entry point of `python -m b2bscore`."""
    app()
