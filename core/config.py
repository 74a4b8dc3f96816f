"""Settings of the API and the worker, read once from the environment (and `.env`).

Bad values stop the process at startup with a message naming the variable, rather than failing
on the first request."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://")
MIN_API_KEY_CHARS = 16  # 16 hex digits are 64 bits: beyond guessing at any request rate an API allows
PREDICT_DEVICES = ("cpu", "cuda")


def masked(url: str) -> str:
    """`url` with the password of its `user:password@` part written as ***: safe for a message or a log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    credentials, at, host = authority.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}{slash}{path}"


class Settings(BaseSettings):
    """Every setting of the API and the worker. Each field's description is its documentation:
    the settings tables of README.md and docs/API.md and `.env.example` are rendered from these
    fields by `python -m core.settings_docs --write` (and a test holds them equal)."""

    # hide_input_in_errors: a bad URL's password never reaches a log through pydantic's `input_value`
    model_config = SettingsConfigDict(
        env_file=os.environ.get("LRCAM_ENV_FILE", ".env"),  # the file of settings beside the environment
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    REDIS_URL: str = Field(
        default="redis://localhost:6379/0",
        description="the Celery broker: `redis://`, `rediss://`, or "
        "`redis+socket:///path/to/redis.sock?virtual_host=<db>`; `scripts/up` starts a local redis-server when "
        "nothing answers here",
    )
    DATABASE_URL: str = Field(
        default="sqlite:///./var/app.db",
        description="the job store: SQLite, or PostgreSQL as `postgresql://USER:PASSWORD@HOST:5432/DB` (read as "
        "`postgresql+psycopg://`). Its schema is migrated on first open; a revision this lrcam does not know stops "
        "the API and the worker: `python -m core.schema current|upgrade|downgrade REV`",
    )
    DATA_DIR: Path = Field(
        default=Path("./var/data"),
        description="where datasets live and are downloaded to (`cifar-10-batches-py/`, `FashionMNIST/raw/`, "
        "image folders)",
    )
    ARTIFACTS_DIR: Path = Field(
        default=Path("./var/artifacts"), description="checkpoints, plots and GradCAM images of every job"
    )
    API_KEY: str | None = Field(
        default=None,
        description="when set (non-empty), every endpoint except `/health`, `/docs`, `/openapi.json` and the "
        "dashboard's page and assets needs `Authorization: Bearer <API_KEY>` (the CLI sends `LRCAM_API_KEY`); "
        "docker compose refuses to start without one. At least 16 characters: make one with "
        "`openssl rand -hex 32`. Without it the API answers loopback clients and names only (`ALLOWED_HOSTS`)",
    )
    MAX_UPLOAD_BYTES: int = Field(
        default=10 * 1024 * 1024, gt=0, description="bytes of one uploaded file; larger get 413"
    )
    MAX_PREDICT_BYTES: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="bytes of one `POST /predict` body, all its files together; larger get 413 at once",
    )
    MAX_PREDICT_PIXELS: int = Field(
        default=16_000_000,
        gt=0,
        description="pixels that decoding one `/predict` request's images will cost, together, read from their "
        "headers; more get 413 before any is decoded. JPEGs count at the scale they are decoded at (1/8 of a side "
        "for a large photo: a 36 MP photo costs 0.56 MP); PNG, WebP and TIFF in full, which decode at 60-70 MP/s "
        "on one core: 16 MP is about a quarter of a second of the model thread. Images are decoded one at a time "
        "and kept at most 256 px a side: one request holds at most its body, one full decode (at most 40 MP, "
        "160 MB) and 64 reduced images (17 MB)",
    )
    MAX_BODY_BYTES: int = Field(
        default=1024 * 1024,
        gt=0,
        description="bytes of any other request body (a job spec); larger get 413 before it is parsed",
    )
    MAX_DATASET_BYTES: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="bytes of one dataset archive (`POST /datasets`); larger get 413 the moment they pass it. "
        "The archive is streamed to DATA_DIR, never held in memory",
    )
    MAX_DATASET_UNPACKED_BYTES: int = Field(
        default=8 * 1024**3,
        gt=0,
        description="bytes a dataset archive may unpack to, all members together; counted while inflating, so a "
        "zip or tar bomb gets 413 before it fills the disk (a member that inflates more than 200 times its "
        "compressed size too)",
    )
    MAX_DATASET_MEMBERS: int = Field(
        default=100_000,
        gt=0,
        description="files and folders in one dataset archive; more get 413 before anything is unpacked",
    )
    JOB_LEASE_SECONDS: float = Field(
        default=45,
        gt=0,
        description="a running job whose worker sent no heartbeat for this many seconds: its worker died, and the "
        "job is queued again within `RECONCILE_SECONDS` (it resumes after its last finished epoch) until "
        "`MAX_JOB_ATTEMPTS`, then failed. A live worker beats every 10 s from a thread of its own; its longest "
        'pause, compiling included, is in bench/README.md ("Heartbeats")',
    )
    JOB_STALL_SECONDS: float = Field(
        default=900,
        gt=0,
        description="a running job whose worker heart-beats but reports no progress (no batch) for this many "
        "seconds has stalled (a hung data loader, a stuck device): queued again, then failed, like a dead worker's",
    )
    MAX_JOB_ATTEMPTS: int = Field(
        default=3,
        ge=1,
        description="deliveries a job gets; a dead or stalled worker's job is queued again until then, then "
        "failed, saying its worker died (or it stalled)",
    )
    RECONCILE_SECONDS: float = Field(
        default=5,
        gt=0,
        description="how often (seconds) the API re-queues dead workers' jobs and re-sends queued jobs the broker "
        "lost (Redis restarted without its data)",
    )
    QUEUED_GRACE_SECONDS: float = Field(
        default=30,
        ge=0,
        description="a queued job older than this many seconds and absent from the broker is sent again",
    )
    MAX_QUEUED_JOBS: int = Field(
        default=100, ge=1, description="submissions while this many jobs are queued get 429 (`Retry-After: 30`)"
    )
    MAX_CONCURRENT_PREDICTS: int = Field(
        default=16,
        ge=1,
        description="`POST /predict` requests served at once by one API process; more wait in `PREDICT_QUEUE`. "
        "Each holds at most its body and its reduced images (about 50 MB with the default caps; full decodes "
        "happen one at a time in the whole process)",
    )
    PREDICT_QUEUE: int = Field(
        default=64,
        ge=0,
        le=10_000,
        description="`/predict` requests that wait (first come, first served) for a slot once "
        "`MAX_CONCURRENT_PREDICTS` run; more get 429 with `Retry-After`",
    )
    PREDICT_WAIT_SECONDS: float = Field(
        default=10,
        gt=0,
        le=300,
        description="how long (seconds) a `/predict` request waits for a slot before it gets 429",
    )
    PREDICT_BODY_SECONDS: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="seconds a `/predict` body may take to arrive (32 MB at 10 Mbit/s takes 27 s); slower get "
        "408. A request holds no prediction slot while its body arrives",
    )
    MAX_UPLOADS_PER_CLIENT: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="`/predict` requests one client (address) may have in flight at once, arriving, waiting or "
        "running (64: room for a load test of 50 clients from one machine); more get 429",
    )
    PREDICT_MAX_BATCH: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="the most images that concurrent `/predict` requests for one checkpoint share in one forward "
        "pass (`1`: no batching, each request alone; a request with more images runs alone)",
    )
    PREDICT_BATCH_DELAY_MS: float = Field(
        default=20,
        ge=0,
        le=1000,
        description="how long (ms) a batch waits, past the moment it could have run, for requests still reading "
        "their uploads and for clients just answered that come straight back (never longer, and not at all when "
        "none is): the most a prediction is delayed to share the model",
    )
    METRICS_CACHE_SECONDS: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="how long (seconds) `GET /jobs/{id}/metrics` reuses its response while the job's status and "
        "epoch are unchanged (dashboards poll it); 0: never",
    )
    JOB_QUEUE: str = Field(
        default="lrcam",
        min_length=1,
        description="the Celery queue the API sends jobs to and the workers take them from",
    )
    PREDICT_DEVICE: str = Field(
        default="cpu",
        description="where `/predict` runs its models: `cpu`, `cuda` or `cuda:N` (`cuda` without a GPU: the CPU)",
    )
    WORKER_DEVICE: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="where a worker trains: `auto` (a GPU when torch sees one, else the CPU), `cpu`, or `cuda` (a "
        "worker that sees no GPU refuses to start: docker compose's GPU worker sets it, so a missing driver is "
        "loud, not slow)",
    )
    WORKER_MEMORY_MB: int | None = Field(
        default=None,
        ge=64,
        le=16_777_216,
        description="the memory in MiB a job's training step may take on a worker, as estimated from its spec "
        "(weights, gradients, momentum and activations: model, width, batch size, image size). Set, the API "
        "refuses a larger spec at submission (422); unset, each worker fails one at once against its device's "
        "memory (its GPU's, or the machine's RAM), with the estimate and the budget in the error",
    )
    PREDICT_THREADS: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="torch threads `/predict` uses (0: torch's default, one per core); `scripts/up` sets 1, its "
        "worker training on the same cores: predictions then take one core instead of fighting training for both",
    )
    API_NICE: int = Field(
        default=0,
        ge=0,
        le=19,
        description="the API's CPU niceness (0-19), taken at start: where a worker trains on the same CPUs, "
        "e.g. 5 lets training have the cores first and requests wait instead",
    )
    WORKER_NICE: int = Field(
        default=0,
        ge=0,
        le=19,
        description="the worker's CPU niceness (0-19), taken at start: where the API runs on the same CPUs, a "
        "niceness above the API's gives predictions and polls the cores first and training the rest; `scripts/up` "
        "sets 3 (on an idle 2-core machine: predictions p95 56-76 ms, training with them 11-12% slower; 10: p95 "
        "under 25 ms, training 16-28% slower; bench/README.md)",
    )
    YIELD_TO_PREDICTIONS: bool = Field(
        default=False,
        description="where the API and a worker share CPU cores: while `/predict` requests come (and for 2 s after "
        "the last), the API marks it in Redis and a training worker trains on one torch thread fewer, leaving a "
        "core to predictions (measured on an idle 2-core machine: no faster answers than `WORKER_NICE` alone, "
        "training 5-8 points slower)",
    )
    LOG_FORMAT: Literal["text", "json"] = Field(
        default="text",
        description="log lines of the API and the worker: `text`, or `json` (one object a line); every line "
        "carries the job id and the request id it belongs to",
    )
    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated browser origins allowed by CORS, and allowed to send state-changing "
        "requests (POST, PATCH, DELETE); empty: CORS closed, and only the server's own pages change jobs",
    )
    ALLOWED_HOSTS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="without `API_KEY`, the `Host` names the API answers to besides localhost, 127.0.0.1 and "
        "[::1] (comma-separated; `*.example.com` for a domain); any other gets 403, so that no web page reaches "
        "a keyless server by DNS rebinding. Without a key the API also answers loopback clients only",
    )
    AUTH_FAILURES_PER_MINUTE: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="wrong API keys one client (address) may send a minute; beyond, 429 with `Retry-After` "
        "until the minute has passed",
    )

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(REDIS_SCHEMES):
            unix = value.startswith("unix:")
            hint = " (a Unix socket is redis+socket:///path/to/redis.sock?virtual_host=<db>)" if unix else ""
            raise ValueError(f"REDIS_URL must start with one of {list(REDIS_SCHEMES)}; got {masked(value)!r}{hint}")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str) -> str:
        """postgresql:// and postgres:// (what PostgreSQL's own tools and most hosts hand out) mean the
        installed driver, psycopg 3; another driver named explicitly is refused with the fix."""
        if value.startswith(("postgres://", "postgresql://")):
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"DATABASE_URL is not a database URL: {masked(value)!r}") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(
                "DATABASE_URL must be sqlite:/// or postgresql+psycopg:// (postgresql:// means the same); "
                f"got {masked(value)!r}"
            )
        if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
            fixed = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=True)
            raise ValueError(
                f"DATABASE_URL names the driver {url.get_driver_name()!r}, which lrcam does not install; "
                f"use postgresql:// or postgresql+psycopg:// (e.g. {fixed})"
            )
        return value

    @field_validator("PREDICT_DEVICE")
    @classmethod
    def _predict_device(cls, value: str) -> str:
        kind, _, index = value.partition(":")
        if kind not in PREDICT_DEVICES or (index and (kind == "cpu" or not index.isdigit())):
            raise ValueError(f"PREDICT_DEVICE must be one of {list(PREDICT_DEVICES)} or cuda:N; got {value!r}")
        return value

    @field_validator("API_KEY")
    @classmethod
    def _empty_key_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("WORKER_MEMORY_MB", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("API_KEY")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"API_KEY must have at least {MIN_API_KEY_CHARS} characters (it has {len(value)}); "
                "make one with: openssl rand -hex 32"
            )
        return value

    @field_validator("CORS_ORIGINS", "ALLOWED_HOSTS", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
