"""The job store's tables (SQLAlchemy 2 typed ORM) and engines.

SQLite (the default, one file under ./var) and PostgreSQL both work; every timestamp is stored and
returned as a timezone-aware UTC datetime."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    ForeignKey,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

JOB_KINDS = ("lr_finder", "train")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ENDED_STATUSES = ("succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; the store needs timezone-aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    checkpoint_id: Mapped[str | None] = mapped_column(String(32))
    result: Mapped[dict[str, Any] | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    progress_at: Mapped[datetime | None] = mapped_column(doc="the last progress, on the store's clock")
    name: Mapped[str | None] = mapped_column(String(100), doc="the user's name for the run")
    tags: Mapped[list[Any]] = mapped_column(default=list, server_default="[]", doc="the user's labels (strings)")
    note: Mapped[str | None] = mapped_column(Text, doc="the user's free text about the run")

    @property
    def best(self) -> dict[str, Any] | None:
        """A finished train job's best epoch ({"epoch", "test_acc"}), from its result."""
        return (self.result or {}).get("best")

    @property
    def last(self) -> dict[str, Any] | None:
        """A finished train job's last epoch ({"epoch", "test_acc"}), from its result."""
        return (self.result or {}).get("last")

    @property
    def lr(self) -> float | None:
        """A finished train job's learning rate, "auto" resolved to the LR finder's suggestion."""
        lr = (self.result or {}).get("lr") if self.kind == "train" else None
        return lr if isinstance(lr, (int, float)) else None


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch_metrics_job_epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int]
    record: Mapped[dict[str, Any]]


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text, doc="relative to ARTIFACTS_DIR")


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    model: Mapped[dict[str, Any]]
    dataset: Mapped[str] = mapped_column(String(64))
    classes: Mapped[list[Any]]
    test_acc: Mapped[float | None]
    epoch: Mapped[int | None]
    path: Mapped[str] = mapped_column(Text, doc="its folder, relative to ARTIFACTS_DIR")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    job: Mapped[Job] = relationship(lazy="joined", doc="the train job that left it: what its accuracy means")

    @property
    def selected_on(self) -> str:
        """The set that chose this epoch: "validation" with a held-out split, else "test"."""
        return str(
            (self.job.result or {}).get("selected_on")
            or ("validation" if self._spec.get("validation_split") else "test")
        )

    @property
    def test_time_flip(self) -> bool:
        """Whether its accuracies (and its predictions) average each image with its mirror."""
        return bool(self._spec.get("test_time_flip", False))

    @property
    def last_epoch(self) -> int | None:
        return ((self.job.result or {}).get("last") or {}).get("epoch")

    @property
    def last_test_acc(self) -> float | None:
        return ((self.job.result or {}).get("last") or {}).get("test_acc")

    @property
    def temperature(self) -> float | None:
        """The temperature fitted on its job's validation split, which /predict?calibrated=true applies;
        None without one (no validation split, or a job from before calibration was measured)."""
        fitted = ((self.job.result or {}).get("calibration") or {}).get("temperature") or {}
        return float(fitted["value"]) if fitted.get("applied") else None

    @property
    def _spec(self) -> dict[str, Any]:
        return self.job.params or {}


class Dataset(Base):
    """A dataset uploaded over HTTP: its files live in DATA_DIR/uploads/<id>/ (train/<class>/*,
    test/<class>/*) once `ready`; the import's summary (counts, size, statistics, skipped files)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), index=True, default="importing")
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="what the import found (ImportSummary)")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]


class Lease(Base):
    """A named lease among processes (e.g. the one reconciler of several API processes)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime]


# As many connections as the API has worker threads (anyio's default limit is 40): a request that
# holds a session while it waits for a thread (a prediction) can never be starved by threads that
# wait for a connection. Most of them are opened only under load and closed again.
POOL = {"pool_size": 5, "max_overflow": 35}


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine (and connection pool) per database URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        pool = POOL if parsed.database and parsed.database != ":memory:" else {}  # one connection in memory
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5}, **POOL)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # the API reads while the worker writes
    cursor.close()


_schema_lock = threading.Lock()
_schema_ready: set[str] = set()


def ensure_schema(engine: Engine) -> None:
    """Bring the store to the newest schema revision once per engine (core.schema); raises the
    store's OperationalError while it is down, and core.schema.SchemaError for a revision this
    code does not know."""
    key = str(engine.url)
    if key in _schema_ready:
        return
    with _schema_lock:
        if key in _schema_ready:
            return
        from core.schema import migrate  # alembic: imported by the first session only

        migrate(engine)
        _schema_ready.add(key)


@contextmanager
def session_for(url: str) -> Iterator[Session]:
    """A session on the store at `url`, its tables created; closes on exit (callers commit)."""
    engine = get_engine(url)
    ensure_schema(engine)
    with _sessionmaker(engine)() as session:
        yield session


@lru_cache(maxsize=8)
def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
