"""One settings class for the whole service, read from B2BSCORE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where the wheel's build step puts the shipped bundles (setup.py); absent in a checkout.
PACKAGED_MODELS_DIR = Path(__file__).resolve().parents[1] / "bundled_models"
# models/ at the root of a source checkout (src/b2bscore/kit/settings.py -> root).
CHECKOUT_MODELS_DIR = Path(__file__).resolve().parents[3] / "models"


def default_models_dir() -> Path:
    """The shipped bundles: inside the installed package, else the checkout's models/."""
    if PACKAGED_MODELS_DIR.is_dir():
        return PACKAGED_MODELS_DIR
    if CHECKOUT_MODELS_DIR.is_dir():
        return CHECKOUT_MODELS_DIR
    return Path("models")  # neither: relative to the working directory, as given


class Settings(BaseSettings):
    """Service configuration; every field can be set as B2BSCORE_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="B2BSCORE_", env_file=None, extra="ignore")

    env: str = "development"
    var_dir: Path = Path("var")
    # Embedded default: SQLite under var/. Production: postgresql+asyncpg://...
    database_url: str | None = None
    db_pool_size: int = Field(default=20, ge=1, le=200)
    # None means the in-process cache; production sets redis://...
    redis_url: str | None = None

    # Whole server-side budget of POST /v1/score, and what is kept back from the
    # fan-out for features, scoring and the audit commit.
    deadline_ms: int = Field(default=500, ge=50, le=30_000)
    scoring_reserve_ms: int = Field(default=120, ge=5, le=10_000)

    # Sandbox providers answer sk_test_ keys; live providers answer sk_live_ keys.
    # When sandbox_url is unset the embedded default starts the sandbox itself.
    sandbox_url: str | None = None
    live_open_banking_url: str | None = None
    live_registry_url: str | None = None
    live_bodacc_url: str | None = None
    live_accounting_url: str | None = None
    provider_max_connections: int = 100

    # Default: the bundles shipped with the package, wherever it is installed.
    models_dir: Path = Field(default_factory=default_models_dir)
    model_id: str | None = None  # None: the newest bundle in models_dir

    # AES-256-GCM data keys as "key_id:base64key,key_id:base64key"; the last encrypts.
    data_keys: SecretStr | None = None
    # Keyed hash for IBANs and account ids outside the encrypted payloads.
    tokenization_key: SecretStr | None = None

    max_body_bytes: int = 16_384
    rate_limit_per_minute: int = 600
    idempotency_ttl_seconds: int = 86_400

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite under var_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'b2bscore.db').as_posix()}"

    @property
    def is_embedded(self) -> bool:
        """True on the embedded default (SQLite audit store)."""
        return self.resolved_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return Settings()
