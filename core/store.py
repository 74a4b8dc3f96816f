"""The job store: every read and write the routers and the worker make, one function each.

Each function takes an open `Session` and commits its own writes. State changes are conditional
updates (`... WHERE status = 'queued'`), so the API cancelling a job and a worker claiming it can
race without either one overwriting the other.

One owner per job: a worker's writes (heartbeat, progress, epochs, artifacts, checkpoint, finish)
carry its `Claim` (the worker process and the attempt that claimed the job) and change nothing once
the job is no longer held by that claim: a worker paused past its lease (SIGSTOP, a long GC, a
network partition) that comes back after its job was re-queued and claimed again writes nothing
more, and is told to stop. Leases are measured on the store's clock: PostgreSQL's `now()` for every
heartbeat and every cutoff, so API and worker machines whose clocks disagree never reap a live job;
an SQLite store is a file on one machine, whose clock is the store's."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast, get_args

from sqlalchemy import ColumnElement, CursorResult, delete, exists, func, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import ENDED_STATUSES, Artifact, Checkpoint, Dataset, EpochMetric, Job, Lease, new_id, utcnow

logger = logging.getLogger(__name__)


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")


class JobStateConflict(RuntimeError):
    """The job's status forbids the action (e.g. cancelling a job that already ended)."""


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    media_type: str
    path: str  # relative to ARTIFACTS_DIR


@dataclass(frozen=True)
class Claim:
    """One delivery's hold on a running job: the worker process and the attempt that claimed it."""

    job_id: str
    worker: str
    attempt: int

    @classmethod
    def of(cls, job: Job) -> Claim:
        assert job.worker is not None and job.status == "running", "only a claimed job has a claim"
        return cls(job.id, job.worker, job.attempts)

    def holds(self) -> tuple[ColumnElement[bool], ...]:
        """The conditions under which the job is still this claim's."""
        return Job.status == "running", Job.worker == self.worker, Job.attempts == self.attempt


def store_now(session: Session) -> Any:
    """Now on the store's clock, for heartbeats and lease cutoffs: PostgreSQL's `now()` (an SQL
    expression, one clock for every machine), or this machine's clock for SQLite's local file."""
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


def _update_job(
    session: Session, job_id: str, *conditions: ColumnElement[bool], commit: bool = True, **values: Any
) -> bool:
    """UPDATE jobs SET values WHERE id = job_id AND conditions; commits (unless told not to: the
    caller's next writes then join the transaction); True if a row changed."""
    statement = update(Job).where(Job.id == job_id, *conditions).values(**values)
    result = cast("CursorResult[Any]", session.execute(statement.execution_options(synchronize_session=False)))
    changed = result.rowcount == 1
    if commit or not changed:
        session.commit()
    return changed


def _held(session: Session, job_id: str, claim: Claim | None) -> bool:
    """Opens a write fenced by `claim`: locks the job's row while the claim still holds it (the
    heartbeat refreshed; the caller's writes join the transaction and commit it) and returns True;
    False, with nothing written, when it no longer does. No claim: an unfenced write (the API's)."""
    if claim is None:
        return True
    assert claim.job_id == job_id, f"claim of job {claim.job_id} used for job {job_id}"
    return _update_job(session, job_id, *claim.holds(), commit=False, heartbeat_at=store_now(session))


def _reload(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(job_id)
    return job


# --- jobs: the API side ---------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    kind: str,
    params: dict[str, Any],
    name: str | None = None,
    tags: list[str] | None = None,
    note: str | None = None,
) -> Job:
    job = Job(
        kind=kind,
        params=params,
        status="queued",
        progress={},
        created_at=utcnow(),
        name=name,
        tags=tags or [],
        note=note,
    )
    session.add(job)
    session.commit()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


JobSort = Literal["created", "-created", "name", "-name", "best", "-best", "last", "-last", "duration", "-duration"]
JOB_SORTS: tuple[str, ...] = get_args(JobSort)


@dataclass(frozen=True)
class JobFilters:
    """GET /jobs' filters; None matches every job. `q`: a case-insensitive substring of the name, the
    note, the id or a tag; `dataset`/`model`: the spec's dataset and model names."""

    status: str | None = None
    kind: str | None = None
    tag: str | None = None
    q: str | None = None
    dataset: str | None = None
    model: str | None = None


def list_jobs(
    session: Session,
    filters: JobFilters | None = None,
    *,
    status: str | None = None,
    kind: str | None = None,
    sort: JobSort = "created",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """The page of jobs matching the filters in the order `sort` names (JobSort: `created` newest
    first, `name` A-Z, `best`/`last` test accuracy highest first, `duration` longest first; a leading
    `-` reverses; jobs without a name, an accuracy or a start come last either way), and how many
    match in all."""
    filters = filters or JobFilters(status=status, kind=kind)
    where = _job_filters(session, filters)
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    page = session.scalars(
        select(Job).where(*where).order_by(*_job_order(session, sort)).limit(limit).offset(offset),
        execution_options={"populate_existing": True},
    )
    return list(page), total


def _tag_elements(session: Session) -> Any:
    """The elements of a job's `tags` as rows of one `value` column (a JSON array: no portable SQL)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    elements = func.json_array_elements_text(Job.tags) if postgres else func.json_each(Job.tags)
    return elements.table_valued("value")


def _job_filters(session: Session, filters: JobFilters) -> list[ColumnElement[bool]]:
    where = [column == value for column, value in ((Job.status, filters.status), (Job.kind, filters.kind)) if value]
    if filters.dataset:
        where.append(Job.params[("dataset", "name")].as_string() == filters.dataset)
    if filters.model:
        where.append(Job.params[("model", "name")].as_string() == filters.model)
    if filters.tag:
        tags = _tag_elements(session)
        where.append(exists(select(1).select_from(tags).where(tags.c.value == filters.tag)))
    if filters.q:
        needle = filters.q.lower()
        tags = _tag_elements(session)
        where.append(
            or_(
                func.lower(Job.name).contains(needle, autoescape=True),
                func.lower(Job.note).contains(needle, autoescape=True),
                func.lower(Job.id).contains(needle, autoescape=True),
                exists(select(1).select_from(tags).where(func.lower(tags.c.value).contains(needle, autoescape=True))),
            )
        )
    return where


def _job_order(session: Session, sort: JobSort) -> list[Any]:
    key, reverse = sort.removeprefix("-"), sort.startswith("-")
    if key == "created":
        return [Job.created_at.asc(), Job.id.asc()] if reverse else [Job.created_at.desc(), Job.id.desc()]
    value: ColumnElement[Any]
    if key == "name":
        value, ascending = func.lower(Job.name), True
    elif key in ("best", "last"):  # the finished job's result (a running one has none yet)
        value, ascending = Job.result[(key, "test_acc")].as_float(), False
    elif key == "duration":
        value, ascending = _duration(session), False
    else:
        raise ValueError(f"unknown sort {sort!r}; expected one of {list(JOB_SORTS)}")
    direction = value.asc() if ascending != reverse else value.desc()
    return [value.is_(None), direction, Job.created_at.desc(), Job.id.desc()]  # nulls last, then newest first


def _duration(session: Session) -> ColumnElement[Any]:
    """Seconds from start to finish (to now while running); null before the start."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", func.coalesce(Job.finished_at, func.now()) - Job.started_at)
    # SQLite keeps UTC times as text that julianday() reads; its 'now' is UTC too; days, ordered as seconds
    return func.julianday(func.coalesce(Job.finished_at, literal_column("'now'"))) - func.julianday(Job.started_at)


def queue_positions(session: Session) -> dict[str, int]:
    """Each queued job's place in line by submission time, 1 = the next to start (few: at most
    MAX_QUEUED_JOBS, and the jobs re-queued after a dead worker)."""
    line = session.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.created_at, Job.id))
    return {job_id: place for place, job_id in enumerate(line, start=1)}


def queue_position(session: Session, job: Job) -> int | None:
    """The job's place in line (1 = next) while it is queued, else None."""
    if job.status != "queued":
        return None
    ahead = (Job.created_at < job.created_at) | ((Job.created_at == job.created_at) & (Job.id < job.id))
    return (session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued", ahead)) or 0) + 1


def set_labels(session: Session, job_id: str, **labels: Any) -> Job:
    """Set any of a job's name, tags and note (they never change what trains), whatever its status."""
    unknown = set(labels) - {"name", "tags", "note"}
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; expected name, tags or note")
    if labels and not _update_job(session, job_id, **labels):
        raise JobNotFound(job_id)
    return _reload(session, job_id)


@dataclass(frozen=True)
class DeletedJob:
    job_id: str
    paths: list[str]  # its artifacts' files and checkpoint folders, relative to ARTIFACTS_DIR


def delete_job(session: Session, job_id: str, *, force: bool = False) -> DeletedJob:
    """Remove a job that ended, with its epochs, artifacts and checkpoint rows; the caller removes the
    files (`paths`, and its folder). JobStateConflict while it is queued or running, while a queued or
    running train job takes its LR suggestion, and, unless `force`, when its checkpoint is the latest
    one (what /predict?checkpoint=latest answers with)."""
    job = _reload(session, job_id)
    if job.status not in ENDED_STATUSES:
        raise JobStateConflict(
            f"job {job_id} is {job.status}; cancel it first (POST /jobs/{job_id}/cancel) and delete it once it ended"
        )
    active = session.scalars(select(Job).where(Job.status.in_(("queued", "running"))))
    users = [other.id for other in active if (other.params.get("optimizer") or {}).get("lr_finder_job") == job_id]
    if users:
        raise JobStateConflict(
            f"job {job_id} is the LR finder of {len(users)} queued or running train job(s) ({users[0]}, ...); "
            "delete it once they have ended"
        )
    latest = latest_checkpoint(session)
    if latest is not None and latest.job_id == job_id and not force:
        raise JobStateConflict(
            f"job {job_id} left checkpoint {latest.id}, the latest one: what /predict?checkpoint=latest uses; "
            "delete it with force=true to remove that checkpoint too"
        )
    checkpoints = session.scalars(select(Checkpoint.path).where(Checkpoint.job_id == job_id)).all()
    paths = [artifact.path for artifact in list_artifacts(session, job_id)] + list(checkpoints)
    for table in (Artifact, EpochMetric, Checkpoint):
        session.execute(delete(table).where(table.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id, Job.status.in_(ENDED_STATUSES)))
    session.commit()
    session.expunge(job)  # not read back from the identity map
    return DeletedJob(job_id, paths)


def fail_job(session: Session, job_id: str, error: str) -> bool:
    """Fail a job that has not ended (e.g. it could not be enqueued)."""
    return _update_job(
        session, job_id, Job.status.in_(("queued", "running")), status="failed", error=error, finished_at=utcnow()
    )


def request_cancel(session: Session, job_id: str) -> Job:
    """Cancel a queued job at once, or ask a running one to stop; JobStateConflict once it has ended."""
    status = _reload(session, job_id).status
    if status == "queued" and _update_job(
        session, job_id, Job.status == "queued", status="cancelled", finished_at=utcnow()
    ):
        return _reload(session, job_id)
    if status in ("queued", "running") and _update_job(session, job_id, Job.status == "running", cancel_requested=True):
        return _reload(session, job_id)
    job = _reload(session, job_id)
    raise JobStateConflict(
        f"job {job_id} already ended with status {job.status!r}; only queued or running jobs can be cancelled"
    )


@dataclass(frozen=True)
class Reaped:
    requeued: list[str]  # to send to the broker again
    ended: list[str]  # failed (attempts used up) or cancelled (a cancel was pending)


def reap_stale_jobs(
    session: Session, *, lease_seconds: float, max_attempts: int, stall_seconds: float | None = None
) -> Reaped:
    """Every running job whose worker has not heartbeated for `lease_seconds` (its worker died), or,
    given `stall_seconds`, has made no progress for that long while heart-beating (a hung data
    loader, a stuck device), goes back to `queued` while it has attempts left, else fails saying
    which; a pending cancel cancels it. Its worker, should it come back, writes nothing more.

    Conditional on the heartbeat read, so concurrent reapers act on a job once."""
    now = store_now(session)
    dead = Job.heartbeat_at < now - timedelta(seconds=lease_seconds)
    stalled = Job.progress_at < now - timedelta(seconds=stall_seconds) if stall_seconds else dead
    stale = session.execute(
        select(Job.id, Job.heartbeat_at, Job.progress_at, Job.attempts, Job.cancel_requested, dead.label("dead")).where(
            Job.status == "running", or_(dead, stalled)
        )
    ).all()
    requeued: list[str] = []
    ended: list[str] = []
    for job_id, heartbeat_at, progress_at, attempts, cancel_requested, is_dead in stale:
        if is_dead:
            why = (
                f"worker died or lost contact: no heartbeat since {heartbeat_at.isoformat()} "
                f"(JOB_LEASE_SECONDS={lease_seconds:g})"
            )
        else:
            why = (
                f"stalled: its worker heart-beats but made no progress since {progress_at.isoformat()} "
                f"(JOB_STALL_SECONDS={stall_seconds:g})"
            )
        if cancel_requested or attempts < max_attempts:
            status = requeue_job(session, job_id, heartbeat_at=heartbeat_at)
            logger.warning("job %s re-queued (attempt %d of %d): %s", job_id, attempts, max_attempts, why)
        else:
            error = f"{why}; gave up after {attempts} attempt(s) (MAX_JOB_ATTEMPTS={max_attempts})"
            failed = _update_job(
                session,
                job_id,
                Job.status == "running",
                Job.heartbeat_at == heartbeat_at,
                status="failed",
                error=error,
                finished_at=utcnow(),
            )
            status = "failed" if failed else None
            logger.warning("job %s failed: %s", job_id, error)
        if status is not None:
            (requeued if status == "queued" else ended).append(job_id)
    return Reaped(requeued, ended)


def take_lease(session: Session, name: str, *, holder: str, seconds: float) -> bool:
    """Hold the lease `name` for `seconds` from now on the store's clock: True when it was free,
    had expired, or was `holder`'s already (renewed); False while another holder has it."""
    now = _now(session)
    until = now + timedelta(seconds=seconds)
    statement = update(Lease).where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
    result = cast("CursorResult[Any]", session.execute(statement.values(holder=holder, expires_at=until)))
    if result.rowcount == 1:
        session.commit()
        return True
    try:
        session.add(Lease(name=name, holder=holder, expires_at=until))
        session.commit()
        return True
    except IntegrityError:  # held by another
        session.rollback()
        return False


def _now(session: Session) -> datetime:
    """The store's clock as a value (an ORM INSERT takes values, not SQL expressions)."""
    now = store_now(session)
    return now if isinstance(now, datetime) else cast(datetime, session.scalar(select(now)))


def requeue_job(
    session: Session,
    job_id: str,
    *,
    heartbeat_at: datetime | None = None,
    claim: Claim | None = None,
    count_attempt: bool = True,
) -> str | None:
    """Put a running job back in the queue for its next delivery (a train job resumes after its last
    finished epoch), or cancel it when a cancel is pending. Only while it is running with that
    `heartbeat_at` and/or held by that `claim`, when given. `count_attempt=False` gives the delivery
    back: a worker shutting down gracefully is no failure of the job and must not use up MAX_JOB_ATTEMPTS.

    The job's new status ("queued" or "cancelled"); None when it was not running (so)."""
    running = [Job.status == "running"]
    running += [Job.heartbeat_at == heartbeat_at] if heartbeat_at is not None else []
    running += list(claim.holds()) if claim is not None else []
    if _update_job(session, job_id, *running, Job.cancel_requested.is_(True), status="cancelled", finished_at=utcnow()):
        return "cancelled"
    values: dict[str, Any] = dict(status="queued", worker=None, heartbeat_at=None)
    if not count_attempt:
        values["attempts"] = Job.attempts - 1  # claim_job counted this delivery
    return "queued" if _update_job(session, job_id, *running, **values) else None


def queued_jobs(session: Session, *, created_before: datetime) -> list[Job]:
    """Queued jobs created before `created_before`, oldest first (the reconciler's candidates)."""
    statement = select(Job).where(Job.status == "queued", Job.created_at < created_before)
    return list(session.scalars(statement.order_by(Job.created_at), execution_options={"populate_existing": True}))


def count_queued(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) or 0


# --- jobs: the worker side ------------------------------------------------------------------------


def claim_job(session: Session, job_id: str, *, worker: str, lease_seconds: float) -> Job | None:
    """Mark a job running for this delivery: a queued job, or a running one whose worker has died.
    `worker` names the process (host and pid): `Claim.of(job)` is then this delivery's claim.

    None when another live delivery runs it or it has ended (a cancelled job never starts)."""
    now = store_now(session)
    dead = (Job.status == "running") & (Job.heartbeat_at < now - timedelta(seconds=lease_seconds))
    claimable = or_(Job.status == "queued", dead)
    values = dict(status="running", started_at=now, heartbeat_at=now, progress_at=now, worker=worker, progress={})
    if not _update_job(session, job_id, claimable, attempts=Job.attempts + 1, **values):
        return None
    job = _reload(session, job_id)
    if job.attempts > 1:  # a redelivery after a dead worker: a train job resumes and keeps its epochs
        session.execute(delete(Artifact).where(Artifact.job_id == job_id))
        session.commit()
    return job


def heartbeat(
    session: Session, job_id: str, progress: dict[str, Any] | None = None, *, claim: Claim | None = None
) -> bool:
    """Refresh a running job's heartbeat (and progress); False once the job is no longer running
    (or no longer held by `claim`)."""
    values: dict[str, Any] = {"heartbeat_at": store_now(session)}
    if progress is not None:
        values.update(progress=progress, progress_at=values["heartbeat_at"])
    held = claim.holds() if claim is not None else (Job.status == "running",)
    return _update_job(session, job_id, *held, **values)


def should_stop(session: Session, job_id: str, *, claim: Claim | None = None) -> bool:
    """True when a cancel was requested or the job stopped being running (e.g. its lease expired),
    or, given a claim, is held by another delivery now."""
    row = session.execute(
        select(Job.status, Job.cancel_requested, Job.worker, Job.attempts).where(Job.id == job_id)
    ).one_or_none()
    if row is None or row.status != "running" or row.cancel_requested:
        return True
    return claim is not None and (row.worker, row.attempts) != (claim.worker, claim.attempt)


def add_epoch(session: Session, job_id: str, record: dict[str, Any], *, claim: Claim | None = None) -> bool:
    """Store one epoch's record; a second record for the same epoch replaces the first. False, and
    nothing stored, when `claim` no longer holds the job."""
    if not _held(session, job_id, claim):
        return False
    epoch = int(record["epoch"])
    existing = session.scalar(select(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch == epoch))
    if existing is None:
        session.add(EpochMetric(job_id=job_id, epoch=epoch, record=record))
    else:
        existing.record = record
    session.commit()
    return True


def finish_job(
    session: Session,
    job_id: str,
    *,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    checkpoint_id: str | None = None,
    progress: dict[str, Any] | None = None,
    claim: Claim | None = None,
) -> bool:
    """End a running job; False (and nothing written) when it is no longer running (or no longer
    held by `claim`)."""
    if status not in ENDED_STATUSES:
        raise ValueError(f"finish_job status must be one of {list(ENDED_STATUSES)}; got {status!r}")
    values: dict[str, Any] = dict(status=status, result=result, error=error, finished_at=utcnow())
    values.update({"checkpoint_id": checkpoint_id} if checkpoint_id else {})
    values.update({"progress": progress} if progress is not None else {})
    held = claim.holds() if claim is not None else (Job.status == "running",)
    return _update_job(session, job_id, *held, **values)


# --- epochs, artifacts, checkpoints ---------------------------------------------------------------


def list_epochs(session: Session, job_id: str, *, since_epoch: int = 0) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(EpochMetric)
        .where(EpochMetric.job_id == job_id, EpochMetric.epoch > since_epoch)
        .order_by(EpochMetric.epoch)
    )
    return [row.record for row in rows]


def add_artifacts(session: Session, job_id: str, files: Iterable[ArtifactFile], *, claim: Claim | None = None) -> bool:
    """Register files of a job (replacing any of the same name); False, and nothing registered, when
    `claim` no longer holds the job."""
    if not _held(session, job_id, claim):
        return False
    files = list(files)
    names = [file.name for file in files]
    session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.name.in_(names)))
    session.add_all(Artifact(job_id=job_id, name=f.name, media_type=f.media_type, path=f.path) for f in files)
    session.commit()
    return True


def list_artifacts(session: Session, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def get_artifact(session: Session, job_id: str, name: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def add_checkpoint(
    session: Session,
    *,
    job_id: str,
    model: dict[str, Any],
    dataset: str,
    classes: list[str],
    test_acc: float | None,
    epoch: int | None,
    path: str,
    checkpoint_id: str | None = None,
    created_at: datetime | None = None,
    claim: Claim | None = None,
) -> Checkpoint | None:
    """The job's one checkpoint: registered, or, when the job has one already (a delivery that died
    between registering it and finishing), updated in place under the same id. None, and nothing
    written, when `claim` no longer holds the job."""
    if not _held(session, job_id, claim):
        return None
    values = dict(
        model=model,
        dataset=dataset,
        classes=classes,
        test_acc=test_acc,
        epoch=epoch,
        path=path,
        created_at=created_at or utcnow(),
    )
    checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id).limit(1))
    if checkpoint is None:
        checkpoint = Checkpoint(id=checkpoint_id or new_id(), job_id=job_id, **values)
        session.add(checkpoint)
    else:
        for name, value in values.items():
            setattr(checkpoint, name, value)
    session.commit()
    return checkpoint


def get_checkpoint(session: Session, checkpoint_id: str) -> Checkpoint | None:
    return session.get(Checkpoint, checkpoint_id)


def latest_checkpoint(session: Session) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc()).limit(1))


def list_checkpoints(session: Session, *, limit: int | None = None, offset: int = 0) -> list[Checkpoint]:
    """Checkpoints newest first; a page of them with `limit`/`offset`."""
    newest_first = select(Checkpoint).order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc())
    return list(session.scalars(newest_first.limit(limit).offset(offset)))


def count_checkpoints(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Checkpoint)) or 0


# --- uploaded datasets -----------------------------------------------------------------------------


class DatasetInUse(RuntimeError):
    """A queued or running job trains on the dataset."""


def create_dataset(session: Session, *, name: str, dataset_id: str | None = None) -> Dataset:
    dataset = Dataset(id=dataset_id or new_id(), name=name, status="importing", summary={})
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def list_uploaded_datasets(session: Session) -> list[Dataset]:
    """Every uploaded dataset, newest first."""
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc())))


def finish_dataset(
    session: Session, dataset_id: str, *, summary: dict[str, Any] | None = None, error: str | None = None
) -> bool:
    """An import's end: `ready` with its summary, or `failed` with `error`. Only an `importing` dataset
    changes (one deleted or already failed meanwhile stays as it is); returns whether this one did."""
    values: dict[str, Any] = {"status": "failed" if error else "ready", "error": error, "finished_at": utcnow()}
    if summary is not None:
        values["summary"] = summary
    changed = session.execute(
        update(Dataset).where(Dataset.id == dataset_id, Dataset.status == "importing").values(**values)
    )
    session.commit()
    return cast(CursorResult[Any], changed).rowcount == 1


def jobs_using_dataset(session: Session, dataset_id: str) -> list[Job]:
    """The queued and running jobs that train on the uploaded dataset (few: filtered in Python, the same
    on SQLite and PostgreSQL)."""
    active = session.scalars(select(Job).where(Job.status.in_(("queued", "running"))))
    return [job for job in active if (job.params.get("dataset") or {}).get("id") == dataset_id]


def delete_dataset(session: Session, dataset_id: str) -> Dataset:
    """Removes the dataset's row; DatasetInUse while a queued or running job trains on it. The caller
    removes its files."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise LookupError(f"no uploaded dataset with id {dataset_id!r}")
    users = jobs_using_dataset(session, dataset_id)
    if users:
        raise DatasetInUse(
            f"dataset {dataset_id!r} is used by {len(users)} queued or running job(s) ({users[0].id}, ...): "
            "cancel them or wait for them to end"
        )
    session.delete(dataset)
    session.commit()
    return dataset


def fail_interrupted_imports(session: Session, *, quiet_since: datetime) -> list[str]:
    """Marks `failed` the imports still `importing` that gave no sign of life (created, or progress
    reported) since `quiet_since`: their API process stopped mid-import. A user sees why and uploads
    again instead of waiting forever; an import that was only slow finds its row failed and removes
    its files (run_import)."""
    stale = []
    for dataset in session.scalars(select(Dataset).where(Dataset.status == "importing")):
        at = (dataset.summary or {}).get("progress", {}).get("at")
        alive = datetime.fromisoformat(at) if at else dataset.created_at
        if alive < quiet_since:
            stale.append(dataset.id)
    for dataset_id in stale:
        finish_dataset(session, dataset_id, error="the import was interrupted (its API process stopped); upload again")
    return stale


def dataset_progress(session: Session, dataset_id: str, progress: dict[str, Any]) -> None:
    """An importing dataset's progress ({"done", "total"} images, and when), in its summary until the
    import ends."""
    session.execute(
        update(Dataset)
        .where(Dataset.id == dataset_id, Dataset.status == "importing")
        .values(summary={"progress": progress | {"at": utcnow().isoformat()}})
    )
    session.commit()
