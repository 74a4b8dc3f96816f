"""The job store: every read and write the routers and the worker make, one function each.

Each function takes an open `Session` and commits its own writes. State changes are conditional
updates (`... WHERE status = 'queued'`), so the API cancelling a job and a worker claiming it can
race without either one overwriting the other."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.db import ENDED_STATUSES, Artifact, Checkpoint, EpochMetric, Job, new_id, utcnow


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


def _update_job(session: Session, job_id: str, *conditions: ColumnElement[bool], **values: Any) -> bool:
    """UPDATE jobs SET values WHERE id = job_id AND conditions; commits; True if a row changed."""
    statement = update(Job).where(Job.id == job_id, *conditions).values(**values)
    changed = session.execute(statement.execution_options(synchronize_session=False)).rowcount == 1
    session.commit()
    return changed


def _reload(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(job_id)
    return job


# --- jobs: the API side ---------------------------------------------------------------------------


def create_job(session: Session, *, kind: str, params: dict[str, Any]) -> Job:
    job = Job(kind=kind, params=params, status="queued", progress={}, created_at=utcnow())
    session.add(job)
    session.commit()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


def list_jobs(
    session: Session, *, status: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Job], int]:
    """The page of jobs matching the filters, newest first, and how many match in all."""
    filters = [column == value for column, value in ((Job.status, status), (Job.kind, kind)) if value]
    total = session.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
    newest_first = (Job.created_at.desc(), Job.id.desc())
    page = session.scalars(
        select(Job).where(*filters).order_by(*newest_first).limit(limit).offset(offset),
        execution_options={"populate_existing": True},
    )
    return list(page), total


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
    if status in ("queued", "running") and _update_job(
        session, job_id, Job.status == "running", cancel_requested=True
    ):
        return _reload(session, job_id)
    job = _reload(session, job_id)
    raise JobStateConflict(
        f"job {job_id} already ended with status {job.status!r}; only queued or running jobs can be cancelled"
    )


@dataclass(frozen=True)
class Reaped:
    requeued: list[str]  # to send to the broker again
    ended: list[str]  # failed (attempts used up) or cancelled (a cancel was pending)


def reap_stale_jobs(session: Session, *, lease_seconds: float, max_attempts: int) -> Reaped:
    """Every running job whose worker has not heartbeated for `lease_seconds` (its worker died) goes
    back to `queued` while it has attempts left, else fails saying so; a pending cancel cancels it.

    Conditional on the heartbeat read, so concurrent reapers act on a job once."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    stale = session.execute(
        select(Job.id, Job.heartbeat_at, Job.attempts, Job.cancel_requested).where(
            Job.status == "running", Job.heartbeat_at < cutoff
        )
    ).all()
    requeued, ended = [], []
    for job_id, heartbeat_at, attempts, cancel_requested in stale:
        if cancel_requested or attempts < max_attempts:
            status = requeue_job(session, job_id, heartbeat_at=heartbeat_at)
        else:
            error = (
                f"worker died or lost contact: no heartbeat since {heartbeat_at.isoformat()} "
                f"(JOB_LEASE_SECONDS={lease_seconds:g}); gave up after {attempts} attempt(s) "
                f"(MAX_JOB_ATTEMPTS={max_attempts})"
            )
            failed = _update_job(
                session, job_id, Job.status == "running", Job.heartbeat_at == heartbeat_at,
                status="failed", error=error, finished_at=utcnow(),
            )  # fmt: skip
            status = "failed" if failed else None
        if status is not None:
            (requeued if status == "queued" else ended).append(job_id)
    return Reaped(requeued, ended)


def requeue_job(
    session: Session,
    job_id: str,
    *,
    heartbeat_at: datetime | None = None,
    worker: str | None = None,
    count_attempt: bool = True,
) -> str | None:
    """Put a running job back in the queue for its next delivery (a train job resumes after its last
    finished epoch), or cancel it when a cancel is pending. Only while it is running with that
    `heartbeat_at` and/or `worker`, when given. `count_attempt=False` gives the delivery back: a
    worker shutting down gracefully is no failure of the job and must not use up MAX_JOB_ATTEMPTS.

    The job's new status ("queued" or "cancelled"); None when it was not running (so)."""
    running = [Job.status == "running"]
    running += [Job.heartbeat_at == heartbeat_at] if heartbeat_at is not None else []
    running += [Job.worker == worker] if worker is not None else []
    if _update_job(session, job_id, *running, Job.cancel_requested.is_(True), status="cancelled",
                   finished_at=utcnow()):  # fmt: skip
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

    None when another live delivery runs it or it has ended (a cancelled job never starts)."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    claimable = or_(Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < cutoff))
    now = utcnow()
    values = dict(status="running", started_at=now, heartbeat_at=now, worker=worker, progress={})
    if not _update_job(session, job_id, claimable, attempts=Job.attempts + 1, **values):
        return None
    job = _reload(session, job_id)
    if job.attempts > 1:  # a redelivery after a dead worker: a train job resumes and keeps its epochs
        session.execute(delete(Artifact).where(Artifact.job_id == job_id))
        session.commit()
    return job


def heartbeat(session: Session, job_id: str, progress: dict[str, Any] | None = None) -> bool:
    """Refresh a running job's heartbeat (and progress); False once the job is no longer running."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    return _update_job(session, job_id, Job.status == "running", **values)


def should_stop(session: Session, job_id: str) -> bool:
    """True when a cancel was requested or the job stopped being running (e.g. its lease expired)."""
    row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    return row is None or row.status != "running" or row.cancel_requested


def add_epoch(session: Session, job_id: str, record: dict[str, Any]) -> None:
    """Store one epoch's record; a second record for the same epoch replaces the first."""
    epoch = int(record["epoch"])
    existing = session.scalar(select(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch == epoch))
    if existing is None:
        session.add(EpochMetric(job_id=job_id, epoch=epoch, record=record))
    else:
        existing.record = record
    session.commit()


def finish_job(
    session: Session,
    job_id: str,
    *,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    checkpoint_id: str | None = None,
    progress: dict[str, Any] | None = None,
) -> bool:
    """End a running job; False (and nothing written) when it is no longer running."""
    if status not in ENDED_STATUSES:
        raise ValueError(f"finish_job status must be one of {list(ENDED_STATUSES)}; got {status!r}")
    values: dict[str, Any] = dict(status=status, result=result, error=error, finished_at=utcnow())
    values.update({"checkpoint_id": checkpoint_id} if checkpoint_id else {})
    values.update({"progress": progress} if progress is not None else {})
    return _update_job(session, job_id, Job.status == "running", **values)


# --- epochs, artifacts, checkpoints ---------------------------------------------------------------


def list_epochs(session: Session, job_id: str, *, since_epoch: int = 0) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(EpochMetric)
        .where(EpochMetric.job_id == job_id, EpochMetric.epoch > since_epoch)
        .order_by(EpochMetric.epoch)
    )
    return [row.record for row in rows]


def add_artifacts(session: Session, job_id: str, files: Iterable[ArtifactFile]) -> None:
    """Register files of a job (replacing any of the same name)."""
    files = list(files)
    names = [file.name for file in files]
    session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.name.in_(names)))
    session.add_all(Artifact(job_id=job_id, name=f.name, media_type=f.media_type, path=f.path) for f in files)
    session.commit()


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
) -> Checkpoint:
    checkpoint = Checkpoint(
        id=checkpoint_id or new_id(),
        job_id=job_id,
        model=model,
        dataset=dataset,
        classes=classes,
        test_acc=test_acc,
        epoch=epoch,
        path=path,
        created_at=created_at or utcnow(),
    )
    session.add(checkpoint)
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
