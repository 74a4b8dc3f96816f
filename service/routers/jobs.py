"""Jobs: submit an LR range test or a training run, follow it, cancel it, read its metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BeforeValidator
from sqlalchemy.orm import Session

from core import store
from core.broker import BrokerUnavailable
from core.config import Settings
from core.db import Job, session_for
from ml.specs import MAX_EPOCHS, LRFinderSpec, TrainSpec
from service.admission import check_dataset_on_disk, check_lr_finder_job, check_memory, check_uploaded_dataset
from service.broker import Broker, BrokerDep
from service.cache import Tag, etag_of, job_tag, metrics_cache
from service.deps import Limit, Offset, SessionDep, SettingsDep
from service.errors import Responses
from service.schemas import (
    BestEpochPublic,
    EpochPublic,
    JobKind,
    JobPublic,
    JobsPublic,
    JobStatus,
    LRFinderJobPublic,
    LRFinderMetricsPublic,
    TrainJobPublic,
    TrainMetricsPublic,
    job_public,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])

UNAVAILABLE: Responses = {503: {"description": "the broker or the job store is unreachable"}}
TOO_MANY: Responses = {429: {"description": "MAX_QUEUED_JOBS jobs are queued already"}}
UNKNOWN_JOB: Responses = {404: {"description": "no job with this id"}}
LOCATION = {"Location": {"description": "the job's URL, /jobs/{id}", "schema": {"type": "string"}}}
ACCEPTED: Responses = {202: {"description": "recorded and queued", "headers": LOCATION}}


def _submit(session: Session, broker: Broker, settings: Settings, kind: str, params: dict[str, Any]) -> Job:
    """Record the job, then enqueue it; a broker that does not answer fails the job (never loses it).
    429 while MAX_QUEUED_JOBS jobs wait already."""
    queued = store.count_queued(session)
    if queued >= settings.MAX_QUEUED_JOBS:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{queued} jobs are queued already, the most allowed (MAX_QUEUED_JOBS={settings.MAX_QUEUED_JOBS}); "
            "wait for some to start or cancel some, then submit again",
            headers={"Retry-After": "30"},
        )
    job = store.create_job(session, kind=kind, params=params)
    try:
        broker.send_job(job.id, kind, params)
    except BrokerUnavailable as exc:
        store.fail_job(session, job.id, f"could not enqueue: {exc}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; job {job.id} was recorded as failed") from exc
    return job


@router.post("/lr-finder", status_code=status.HTTP_202_ACCEPTED, responses=ACCEPTED | UNAVAILABLE | TOO_MANY)
def create_lr_finder_job(
    spec: LRFinderSpec, response: Response, session: SessionDep, broker: BrokerDep, settings: SettingsDep
) -> LRFinderJobPublic:
    """Queue Leslie Smith's LR range test; `Location` is the new job's URL."""
    check_dataset_on_disk(spec.dataset, settings.DATA_DIR)
    check_uploaded_dataset(session, spec.dataset)
    check_memory(spec, settings.WORKER_MEMORY_MB)
    job = _submit(session, broker, settings, "lr_finder", spec.model_dump(mode="json"))
    response.headers["Location"] = f"/jobs/{job.id}"
    return LRFinderJobPublic.model_validate(job)


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, responses=ACCEPTED | UNAVAILABLE | TOO_MANY)
def create_train_job(
    spec: TrainSpec, response: Response, session: SessionDep, broker: BrokerDep, settings: SettingsDep
) -> TrainJobPublic:
    """Queue a training run (`optimizer.lr` "auto" takes a succeeded LR-finder job's suggestion);
    `Location` is the new job's URL."""
    check_dataset_on_disk(spec.dataset, settings.DATA_DIR)
    check_uploaded_dataset(session, spec.dataset)
    check_memory(spec, settings.WORKER_MEMORY_MB)
    check_lr_finder_job(session, spec)
    job = _submit(session, broker, settings, "train", spec.model_dump(mode="json"))
    response.headers["Location"] = f"/jobs/{job.id}"
    return TrainJobPublic.model_validate(job)


def _empty_is_none(value: object) -> object:
    return value or None  # `?status=&kind=` (the contract's own example) means no filter


StatusFilter = Annotated[JobStatus | None, BeforeValidator(_empty_is_none), Query(description="only this status")]
KindFilter = Annotated[JobKind | None, BeforeValidator(_empty_is_none), Query(description="only this kind")]


@router.get("", responses=UNAVAILABLE)
def list_jobs(
    session: SessionDep,
    status: StatusFilter = None,
    kind: KindFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobsPublic:
    """Jobs, newest first, with the total matching the filters."""
    jobs, total = store.list_jobs(session, status=status, kind=kind, limit=limit, offset=offset)
    for job in jobs:
        metrics_cache.seen(job.id, job_tag(job.status, job.progress))
    return JobsPublic(jobs=[job_public(job) for job in jobs], total=total)


def _job_or_404(session: Session, job_id: str) -> Job:
    job = store.get_job(session, job_id)
    if job is None:
        raise store.JobNotFound(job_id)
    metrics_cache.seen(job.id, job_tag(job.status, job.progress))  # its metrics are at least this fresh
    return job


@router.get("/{job_id}", responses=UNKNOWN_JOB | UNAVAILABLE)
def get_job(job_id: str, session: SessionDep) -> JobPublic:
    return job_public(_job_or_404(session, job_id))


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses=UNKNOWN_JOB | {409: {"description": "the job already ended"}} | UNAVAILABLE,
)
def cancel_job(job_id: str, session: SessionDep, broker: BrokerDep) -> JobPublic:
    """A queued job is cancelled at once; a running one is asked to stop (it stays running until it
    does, within an epoch or a few LR-finder iterations)."""
    job = store.request_cancel(session, job_id)
    metrics_cache.forget(job_id)  # its next poll shows the cancel
    if job.status == "cancelled":
        broker.revoke(job.id)
    return job_public(job)


NOT_MODIFIED: Responses = {304: {"description": "If-None-Match names the current metrics: the client has them"}}


@router.get(
    "/{job_id}/metrics",
    response_model=TrainMetricsPublic | LRFinderMetricsPublic,
    responses=UNKNOWN_JOB | UNAVAILABLE | NOT_MODIFIED,
)
async def get_metrics(
    job_id: str,
    settings: SettingsDep,
    since_epoch: Annotated[int, Query(ge=0, le=MAX_EPOCHS, description="train jobs: only epochs after this one")] = 0,
    if_none_match: Annotated[str | None, Header(description="the ETag of the metrics the client has")] = None,
) -> Response:
    """A train job's epoch records (and, once finished, per-class accuracy), or an LR-finder curve.
    At most METRICS_CACHE_SECONDS older than the store (service.cache), and never older than what
    the client has: its `If-None-Match` naming other metrics than this process's cached ones is read
    from the store (so a client polling several API processes never goes back), and naming the
    current ones is answered 304 without a body."""
    body = metrics_cache.get(job_id, since_epoch)
    if body is None or (if_none_match is not None and if_none_match != etag_of(body)):
        # one hop to the threadpool for the store (a session dependency would take three)
        metrics, tag = await run_in_threadpool(_read_metrics, settings, job_id, since_epoch)
        body = metrics.model_dump_json().encode()
        metrics_cache.put(job_id, since_epoch, body, ttl=settings.METRICS_CACHE_SECONDS, tag=tag)
    etag = etag_of(body)
    if if_none_match == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


def _read_metrics(
    settings: Settings, job_id: str, since_epoch: int
) -> tuple[TrainMetricsPublic | LRFinderMetricsPublic, Tag]:
    with session_for(settings.DATABASE_URL) as session:
        job = _job_or_404(session, job_id)
        return _metrics(session, job, since_epoch), job_tag(job.status, job.progress)


def _metrics(session: Session, job: Job, since_epoch: int) -> TrainMetricsPublic | LRFinderMetricsPublic:
    result = job.result or {}
    if job.kind == "lr_finder":
        return LRFinderMetricsPublic(
            job_id=job.id,
            status=job.status,  # type: ignore[arg-type]
            lrs=result.get("lrs", []),
            losses=result.get("losses", []),
            smoothed_losses=result.get("smoothed_losses", []),
            # a job stored before the trend was recorded suggested on its smoothed curve
            trend_losses=result.get("trend_losses", result.get("smoothed_losses", [])),
            suggested_lr=result.get("suggested_lr"),
            suggestions=result.get("suggestions", {}),
            diverged_at_lr=result.get("diverged_at_lr"),
            stopped_at_lr=result.get("stopped_at_lr"),
            stop_reason=result.get("stop_reason"),
            warnings=result.get("warnings", []),
        )
    epochs = store.list_epochs(session, job.id)
    return TrainMetricsPublic(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        epochs=[EpochPublic.model_validate(record) for record in epochs if record["epoch"] > since_epoch],
        best=result.get("best") or _best(epochs, _selected_on(job.params)),
        last=result.get("last") or _last(epochs, _selected_on(job.params)),
        test_time_flip=result.get("test_time_flip", bool(job.params.get("test_time_flip"))),
        per_class_accuracy=result.get("per_class_accuracy"),
        stop_reason=result.get("stop_reason"),
        selected_on=result.get("selected_on") or _selected_on(job.params),
        warnings=result.get("warnings", []),
    )


def _selected_on(params: dict[str, Any]) -> Literal["validation", "test"]:
    return "validation" if params.get("validation_split") else "test"


def _best(epochs: list[dict[str, Any]], selected_on: str = "test") -> BestEpochPublic | None:
    """The best epoch so far of a running job, by the accuracy its trainer selects on."""
    key = "val_acc" if selected_on == "validation" else "test_acc"
    scored = [record for record in epochs if record.get(key) is not None and record.get("test_acc") is not None]
    if not scored:
        return None
    best = max(scored, key=lambda record: (record[key], -record["epoch"]))
    return _summary(best, selected_on)


def _last(epochs: list[dict[str, Any]], selected_on: str = "test") -> BestEpochPublic | None:
    """The latest epoch of a running job."""
    return _summary(epochs[-1], selected_on) if epochs and epochs[-1].get("test_acc") is not None else None


def _summary(record: dict[str, Any], selected_on: str) -> BestEpochPublic:
    val_acc = record.get("val_acc") if selected_on == "validation" else None
    return BestEpochPublic(epoch=record["epoch"], test_acc=record["test_acc"], val_acc=val_acc)
