"""One settings class for the whole service, read from B2BSCORE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # INSEE API Sirene: the portal's integration key and the plan's quota (public: 30/min).
    sirene_api_key: SecretStr | None = None
    sirene_requests_per_minute: int = Field(default=30, ge=1, le=100_000)
    # Largest FEC accepted by POST /v1/companies/{siren}/books (413 beyond).
    books_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    # Open banking (docs/PROVIDERS.md): the bank directory (None: the one shipped in the
    # package), the bank whose API live_open_banking_url overrides, how far back dateFrom
    # reaches, the QSealC signing key (PEM, RSA) and its keyId, the QWAC client certificate
    # and key (PEM), and the CAs trusted for the banks' servers.
    open_banking_banks_file: Path | None = None
    open_banking_default_bank: str = "sandbox-stet14"
    open_banking_history_days: int = Field(default=400, ge=91, le=1_000)
    open_banking_signing_key_file: Path | None = None
    open_banking_signing_key_id: str | None = None
    open_banking_client_cert_file: Path | None = None
    open_banking_client_key_file: Path | None = None
    open_banking_ca_file: Path | None = None  # None: the system's trust store

    models_dir: Path = Path("models")
    model_id: str | None = None  # None: the newest bundle in models_dir

    # AES-256-GCM data keys as "key_id:base64key,key_id:base64key"; the last encrypts.
    data_keys: SecretStr | None = None
    # Keyed hash for IBANs and account ids outside the encrypted payloads.
    tokenization_key: SecretStr | None = None

    max_body_bytes: int = 16_384
    rate_limit_per_minute: int = 600
    idempotency_ttl_seconds: int = 86_400

    # Job engine (kit/jobs.py): None runs the worker inside the API process on the
    # embedded default only; production runs `b2bscore worker` processes.
    jobs_in_process: bool | None = None
    jobs_concurrency: int = Field(default=8, ge=1, le=256)
    jobs_pool_size: int = Field(default=10, ge=2, le=200)
    # Fallback poll of the queue (LISTEN/NOTIFY wakes workers at once), and the latest a
    # scheduled retry starts after its time.
    jobs_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    jobs_shutdown_seconds: float = Field(default=30.0, gt=0, le=3600)
    # A worker silent (no heartbeat) this long is dead: its running jobs run again.
    jobs_stalled_seconds: float = Field(default=30.0, ge=1, le=3600)

    # Webhook deliveries (docs/WEBHOOKS.md): the exponential schedule is
    # min(base * 3**(n-1), cap) +/- 20 % jitter between attempts, max_attempts in all.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    webhook_retry_cap_seconds: float = Field(default=43_200.0, gt=0, le=86_400)
    webhook_max_attempts: int = Field(default=15, ge=1, le=50)
    webhook_secret_grace_seconds: int = Field(default=86_400, ge=0, le=7 * 86_400)
    webhook_max_endpoints: int = Field(default=16, ge=1, le=1000)

    # Portfolio monitoring and batches (docs/PORTFOLIO.md).
    monitor_max_companies: int = Field(default=100_000, ge=1)
    batch_max_rows: int = Field(default=100_000, ge=1)
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    batch_chunk_rows: int = Field(default=200, ge=1, le=10_000)
    batch_row_concurrency: int = Field(default=16, ge=1, le=256)
    # A batch row waits for no one: its providers and its audit row get more than the
    # interactive budget before the row is left pending for the next run.
    batch_row_deadline_ms: int = Field(default=5_000, ge=100, le=60_000)

    # Live consents (docs/CONSENTS.md): this service's OAuth client id at the banks and the
    # public URL of its callback; how long a state lives, PSD2's validity (a bank may grant
    # less), the notice before expiry, how long data outlives an expiry, the sync schedule,
    # how old a snapshot may be to feed a decision, and the token endpoint's timeout.
    open_banking_client_id: str = "b2bscore"
    consent_callback_url: str = "http://127.0.0.1:8000/v1/consents/callback"
    consent_state_seconds: int = Field(default=900, ge=30, le=86_400)
    consent_validity_days: int = Field(default=180, ge=1, le=180)
    consent_expiring_notice_days: int = Field(default=7, ge=0, le=90)
    consent_retention_days: int = Field(default=30, ge=0, le=3650)
    consent_sync_interval_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)
    consent_snapshot_max_age_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    consent_token_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    consent_refresh_margin_seconds: int = Field(default=300, ge=0, le=86_400)
    # How stale each process's list of companies with a snapshot may be (see SnapshotIndex).
    consent_index_seconds: float = Field(default=5.0, gt=0, le=3600)

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
