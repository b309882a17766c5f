"""All service configuration, from `SEC_*` environment variables (or a `.env` file).

Defaults are the embedded shape: a SQLite database, Celery over kombu's SQLAlchemy transport
on a SQLite file, and artifacts on local disk, all under `./var`. The production shape sets
`SEC_DATABASE_URL` (Postgres), `SEC_BROKER_URL` (Redis) and `SEC_STORE_URL` (s3://...).
Tests build their own `Settings(...)` and pass it to `create_app`, rather than patching env.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEC_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    var_dir: Path = VAR_DIR
    # Empty = derived from `var_dir` (see `_derive_paths`), so a test or a second instance that
    # only sets `var_dir` gets its own database, broker file and blob store folder.
    database_url: str = ""
    broker_url: str = ""
    # The blob store (uploads, teacher checkpoints, artifacts: app/storage.py). file:// (or a
    # bare path) for local disk, one machine; s3://bucket/prefix for an S3-compatible store,
    # which is what lets the API and the workers run on different machines.
    store_url: str = ""
    s3_endpoint_url: str | None = None

    # Upload limits (413 beyond them).
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_dataset_rows: int = Field(default=500_000, ge=1)
    max_model_archive_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_archive_entries: int = Field(default=10_000, ge=1)
    max_archive_ratio: float = Field(default=200.0, gt=1)

    # Jobs.
    max_concurrent_jobs_per_tenant: int = Field(default=4, ge=1)
    job_max_attempts: int = Field(default=3, ge=1)
    job_lease_seconds: int = Field(default=120, ge=5)
    job_heartbeat_seconds: int = Field(default=20, ge=1)
    job_hard_limit_minutes: float = Field(default=24 * 60, gt=0)
    # Whether the workers that run jobs (the `gpu` queue: the name is the engine's queue, not a
    # promise of hardware) have a CUDA device. False: a job asking for `device: "cuda"` is
    # refused at submit (422) instead of failing on a worker; `auto` and `cpu` always run.
    gpu_workers: bool = False
    # A temporary file in the artifact store untouched this long is a dead writer's leftover.
    partial_write_max_age_seconds: float = Field(default=3600.0, gt=0)
    # Redis redelivers an unacknowledged message after this many seconds. Empty = the hard
    # time limit + 1 h (never while a job still runs); the reliability tests set it low to
    # force a redelivery of a running job.
    broker_visibility_timeout_seconds: int | None = Field(default=None, ge=1)

    # How long an API process trusts what it read about a presented key (its tenant, not
    # revoked) before reading it again; 0 = never cache. A key revoked through another
    # replica is refused by this one at most this long after (app/tenants/auth.py).
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # Database connections each API process keeps open (and opens at start-up), and the most
    # requests it lets use the database at once (app/deps.py `db_admission`).
    db_pool_size: int = Field(default=15, ge=1, le=200)

    # Requests per minute per tenant on the authenticated API (429 + Retry-After beyond it).
    rate_limit_per_minute: int = Field(default=1200, ge=1)
    # Where the counters live. Empty = the broker's Redis when the broker is Redis (shared by
    # every API replica), else in process memory (the embedded shape).
    rate_limit_storage_url: str = ""

    # Serving.
    inference_max_inputs: int = Field(default=256, ge=1)
    inference_max_text_chars: int = Field(default=10_000, ge=1)
    inference_max_batch_size: int = Field(default=32, ge=1)
    # 0: an idle model takes a request at once, and batches form from what arrives while the
    # previous batch runs. More makes an idle model wait that long for a batch to fill.
    inference_max_wait_ms: float = Field(default=0.0, ge=0)
    # Padded tokens (rows x longest sequence) in one ONNX call.
    inference_max_batch_tokens: int = Field(default=8192, ge=1)
    # Measure each model's time per input by batch size at load time and run batches no
    # bigger than the size past which it stops paying (app/serving/batch_size.py).
    inference_auto_batch_size: bool = True
    inference_queue_size: int = Field(default=1024, ge=1)
    inference_threads: int = Field(default=2, ge=1)
    inference_cache_models: int = Field(default=4, ge=1)
    # Approximate memory bound of the loaded-model cache (ONNX + tokenizer sizes, see
    # app/serving/cache.py); the least recently used models are unloaded beyond it.
    inference_cache_memory_mb: float = Field(default=2048.0, gt=0)

    log_level: str = "INFO"
    log_json: bool = False
    # When set, `GET /metrics` answers only `Authorization: Bearer <token>` (401 otherwise).
    # Unset (the default), it is open to whoever reaches the API port (app/metrics.py).
    metrics_token: SecretStr | None = None

    # Server-sent events: how often the stream polls the database for new job events.
    sse_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # Largest JSON request body (uploads have their own limits above).
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    @field_validator("metrics_token")
    @classmethod
    def _empty_token_is_none(cls, token: SecretStr | None) -> SecretStr | None:
        return token if token is not None and token.get_secret_value() else None

    @model_validator(mode="after")
    def _derive_paths(self) -> Self:
        var = self.var_dir.as_posix()
        if not self.database_url:
            self.database_url = f"sqlite:///{var}/sec.db"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{var}/broker.db"
        if not self.store_url:
            self.store_url = f"file://{var}/store"
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if self.environment == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("SEC_DATABASE_URL must not be SQLite in production")
            if self.broker_url.startswith("sqla+sqlite"):
                raise ValueError("SEC_BROKER_URL must not be the SQLite broker in production")
        return self

    @property
    def uploads_dir(self) -> Path:
        """The API's scratch space for uploads being received and checked; what is accepted
        goes to the blob store, and nothing stays here."""
        return self.var_dir / "uploads"

    @property
    def serving_dir(self) -> Path:
        """Verified, extracted artifacts that deployments load from (a cache; safe to delete)."""
        return self.var_dir / "serving"

    @property
    def work_dir(self) -> Path:
        """Scratch space for running jobs (one folder per job)."""
        return self.var_dir / "work"


@lru_cache
def get_settings() -> Settings:
    return Settings()
