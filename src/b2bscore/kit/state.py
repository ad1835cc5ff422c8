"""What the application holds for its lifetime: pools, clients, the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from b2bscore.kit.cache import Cache
from b2bscore.kit.settings import Settings

if TYPE_CHECKING:
    from b2bscore.decisions.chainkeys import ChainKeyring
    from b2bscore.decisions.checkpoints import CheckpointPublisher
    from b2bscore.decisions.crypto import DataKeyring
    from b2bscore.decisions.writer import AuditWriter
    from b2bscore.kit.jobs import Jobs
    from b2bscore.model.bundle import ModelBundle
    from b2bscore.model.serving import ServingModels
    from b2bscore.sources.clients import ProviderClients
    from b2bscore.sources.tokens import Tokenizer


@dataclass(slots=True)
class AppState:
    """Long-lived resources created by the lifespan and shared by every request."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    bundle: ModelBundle
    keyring: DataKeyring
    audit: AuditWriter
    tokenizer: Tokenizer
    sandbox_clients: ProviderClients | None
    live_clients: ProviderClients | None
    chain_keys: ChainKeyring
    checkpoints: CheckpointPublisher
    # Past model versions loaded on demand for replay, by model id.
    bundles: dict[str, ModelBundle] = field(default_factory=dict)
    # The job engine (kit/jobs.py), opened by the lifespan or the worker.
    jobs: Jobs | None = None
    # Live / shadow / canary as one snapshot, swapped whole by the model supervisor.
    serving: ServingModels | None = None
