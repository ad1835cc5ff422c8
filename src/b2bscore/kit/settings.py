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


# The embedded default's admission limit: 20 clients on a 2-core machine finish four at a
# time within their budgets (docs/PERFORMANCE.md, "Degradation by load").
EMBEDDED_CONCURRENT_DECISIONS = 4


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
    # The owner role that runs `db upgrade` (and the retention purge); the service's own
    # role may only INSERT and SELECT audit rows. Unset: database_url.
    migration_database_url: str | None = None
    db_pool_size: int = Field(default=20, ge=1, le=200)
    # None means the in-process cache; production sets redis://...
    redis_url: str | None = None

    # Whole server-side budget of POST /v1/score, and what is kept back from the
    # fan-out for features, scoring and the audit commit.
    deadline_ms: int = Field(default=500, ge=50, le=30_000)
    # Decisions in progress at once per process (kit/admission.py); the others wait, before
    # their budget starts, up to admission_wait_ms. None: 4 on the embedded default (one
    # process deciding beside its sandbox on a small machine), unlimited otherwise.
    max_concurrent_decisions: int | None = Field(default=None, ge=0, le=10_000)
    admission_wait_ms: int = Field(default=5_000, ge=0, le=60_000)
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

    # Default: the bundles shipped with the package, wherever it is installed.
    models_dir: Path = Field(default_factory=default_models_dir)
    model_id: str | None = None  # None: the newest bundle in models_dir
    # Model registry (docs/MODEL.md, lifecycle): how fast workers follow a promotion.
    model_poll_seconds: float = Field(default=1.0, gt=0, le=60)  # change notice in Redis
    model_reread_seconds: float = Field(default=5.0, gt=0, le=3600)  # assignments anyway
    shadow_seconds: float = Field(default=2.0, gt=0, le=3600)
    canary_check_seconds: float = Field(default=10.0, gt=0, le=3600)
    canary_window_seconds: int = Field(default=900, ge=60, le=86_400)
    drift_seconds: float = Field(default=300.0, gt=0, le=86_400)
    drift_window: str = Field(default="7d", pattern=r"^\d+[dhm]$")

    # AES-256-GCM data keys as "key_id:base64key,key_id:base64key"; the last encrypts.
    # Or a file holding them (one per line or comma-separated): a Docker/Kubernetes secret.
    data_keys: SecretStr | None = None
    data_keys_file: Path | None = None
    # Keyed hash for IBANs and account ids outside the encrypted payloads; or its file.
    tokenization_key: SecretStr | None = None
    tokenization_key_file: Path | None = None
    # HMAC-SHA256 keys linking the audit chain, "key_id:base64key,..." (the last links).
    # Unset: a 0600 key file under var_dir.
    audit_keys: SecretStr | None = None
    # Ed25519 private key (base64 of the 32-byte seed) signing the audit checkpoints.
    # Unset: a 0600 key file under var_dir.
    audit_signing_key: SecretStr | None = None
    # Where signed checkpoints of every chain head go: an append-only JSON-lines file, or
    # a directory (one write-once file per checkpoint). Unset: var_dir/audit_checkpoints.jsonl.
    audit_checkpoint_path: Path | None = None
    # Seconds between checkpoints published by the servers; 0 leaves it to the CLI.
    audit_checkpoint_interval_seconds: int = Field(default=300, ge=0, le=86_400)

    max_body_bytes: int = 16_384
    # Request line and headers, checked as they arrive (431 beyond): kit/serving.py.
    max_request_line_bytes: int = Field(default=8_192, ge=256)
    max_header_bytes: int = Field(default=16_384, ge=1_024)
    # Per tenant and mode; requests without a valid key: per client address.
    rate_limit_per_minute: int = 600
    unauthenticated_rate_limit_per_minute: int = Field(default=60, ge=1)
    idempotency_ttl_seconds: int = 86_400
    # The console's signed-in sessions end this long after sign-in (absolute, not idle).
    console_session_ttl_seconds: int = Field(default=3_600, ge=60, le=86_400)

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
    # A check is background work: its providers and audit row get more than the interactive
    # budget (a sweep runs thousands of them at once).
    monitor_check_deadline_ms: int = Field(default=5_000, ge=100, le=60_000)
    batch_max_rows: int = Field(default=100_000, ge=1)
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    batch_chunk_rows: int = Field(default=200, ge=1, le=10_000)
    batch_row_concurrency: int = Field(default=16, ge=1, le=256)
    # A batch row waits for no one: its providers and its audit row get more than the
    # interactive budget before the row is left pending for the next run.
    batch_row_deadline_ms: int = Field(default=5_000, ge=100, le=60_000)
    # A row whose decision fails (not bad input) is tried this many times in all, the n-th
    # retry after batch_row_retry_seconds * 2**(n-1); then it ends `failed` with its reason.
    batch_row_max_attempts: int = Field(default=3, ge=1, le=10)
    batch_row_retry_seconds: float = Field(default=30.0, gt=0, le=3600)

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
    # One STET call of a background sync (no decision waits on it; banks take seconds).
    consent_sync_call_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    # How long a bank's authorization code is worth retrying after a failed exchange
    # (RFC 6749 4.1.2: codes live at most 10 minutes); past it the consent expires.
    consent_code_seconds: int = Field(default=600, ge=10, le=3600)
    consent_refresh_margin_seconds: int = Field(default=300, ge=0, le=86_400)
    # How stale each process's list of companies with an active consent may be (ConsentIndex).
    consent_index_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Set by `b2bscore serve` on the embedded default: its sandbox tenant holds standing
    # test consents of the sandbox directory, first synced when the process starts
    # (consents/sandbox.py), so that decisions read snapshots instead of calling the bank.
    sandbox_consents: bool = False
    # How many drawn companies of the sandbox directory (beside the scenarios) get standing
    # consents there; 0: none. The load tests' mix draws from the same 5,200.
    sandbox_directory_size: int = Field(default=5_200, ge=0, le=100_000)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite under var_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'b2bscore.db').as_posix()}"

    @property
    def resolved_migration_database_url(self) -> str:
        """The owner's database URL for migrations, defaulting to the service's."""
        return self.migration_database_url or self.resolved_database_url

    @property
    def resolved_checkpoint_path(self) -> Path:
        """Where checkpoints are published, defaulting to a JSON-lines file under var_dir."""
        return self.audit_checkpoint_path or self.var_dir / "audit_checkpoints.jsonl"

    @property
    def is_production(self) -> bool:
        """True in production mode (B2BSCORE_ENV=production): secrets fail closed."""
        return self.env == "production"

    @property
    def resolved_max_concurrent_decisions(self) -> int:
        """The admission limit in force; 0 means none."""
        if self.max_concurrent_decisions is not None:
            return self.max_concurrent_decisions
        return EMBEDDED_CONCURRENT_DECISIONS if self.is_embedded else 0

    @property
    def is_embedded(self) -> bool:
        """True on the embedded default (SQLite audit store)."""
        return self.resolved_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return Settings()
