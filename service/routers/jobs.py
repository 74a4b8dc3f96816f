"""Jobs: submit an LR range test or a training run, follow it, cancel it, read its metrics; name,
tag, find and delete runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BeforeValidator, StringConstraints
from sqlalchemy.orm import Session

from core import store
from core.broker import BrokerUnavailable
from core.config import Settings
from core.db import Job, session_for
from ml.specs import MAX_EPOCHS, AuditSpec, DatasetSpec, LRFinderSpec, ModelSpec, TrainSpec
from service.admission import check_dataset_on_disk, check_lr_finder_job, check_memory, check_uploaded_dataset
from service.broker import Broker, BrokerDep
from service.cache import Tag, etag_of, job_tag, metrics_cache
from service.deps import Limit, Offset, SessionDep, SettingsDep
from service.errors import Responses
from service.job_files import remove_job_files
from service.job_labels import (
    TAG_CHARS,
    AuditJobCreate,
    JobLabelsUpdate,
    LRFinderJobCreate,
    TrainJobCreate,
    labels_of,
    spec_of,
)
from service.schemas import (
    AnyJobPublic,
    AuditJobPublic,
    AuditMetricsPublic,
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


def _submit(
    session: Session, broker: Broker, settings: Settings, kind: str, params: dict[str, Any], labels: dict[str, Any]
) -> Job:
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
    job = store.create_job(session, kind=kind, params=params, **labels)
    try:
        broker.send_job(job.id, kind, params)
    except BrokerUnavailable as exc:
        store.fail_job(session, job.id, f"could not enqueue: {exc}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; job {job.id} was recorded as failed") from exc
    return job


@router.post("/lr-finder", status_code=status.HTTP_202_ACCEPTED, responses=ACCEPTED | UNAVAILABLE | TOO_MANY)
def create_lr_finder_job(
    body: LRFinderJobCreate, response: Response, session: SessionDep, broker: BrokerDep, settings: SettingsDep
) -> LRFinderJobPublic:
    """Queue Leslie Smith's LR range test; `Location` is the new job's URL."""
    spec = spec_of(body, LRFinderSpec)
    check_dataset_on_disk(spec.dataset, settings.DATA_DIR)
    check_uploaded_dataset(session, spec.dataset)
    check_memory(spec, settings.WORKER_MEMORY_MB)
    job = _submit(session, broker, settings, "lr_finder", spec.model_dump(mode="json"), labels_of(body))
    response.headers["Location"] = f"/jobs/{job.id}"
    return LRFinderJobPublic.model_validate(_public(session, job))


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, responses=ACCEPTED | UNAVAILABLE | TOO_MANY)
def create_train_job(
    body: TrainJobCreate, response: Response, session: SessionDep, broker: BrokerDep, settings: SettingsDep
) -> TrainJobPublic:
    """Queue a training run (`optimizer.lr` "auto" takes a succeeded LR-finder job's suggestion);
    `Location` is the new job's URL."""
    spec = spec_of(body, TrainSpec)
    check_dataset_on_disk(spec.dataset, settings.DATA_DIR)
    check_uploaded_dataset(session, spec.dataset)
    check_memory(spec, settings.WORKER_MEMORY_MB)
    check_lr_finder_job(session, spec)
    job = _submit(session, broker, settings, "train", spec.model_dump(mode="json"), labels_of(body))
    response.headers["Location"] = f"/jobs/{job.id}"
    return TrainJobPublic.model_validate(_public(session, job))


@router.post("/audit", status_code=status.HTTP_202_ACCEPTED, responses=ACCEPTED | UNAVAILABLE | TOO_MANY)
def create_audit_job(
    body: AuditJobCreate, response: Response, session: SessionDep, broker: BrokerDep, settings: SettingsDep
) -> AuditJobPublic:
    """Queue a label audit of the training set: `folds` models of the spec, each trained on the other folds,
    score every training image; GET /jobs/{id}/label-issues then ranks the likely label errors.
    `Location` is the new job's URL."""
    spec = spec_of(body, AuditSpec)
    check_dataset_on_disk(spec.dataset, settings.DATA_DIR)
    check_uploaded_dataset(session, spec.dataset)
    check_memory(spec, settings.WORKER_MEMORY_MB)
    check_lr_finder_job(session, spec)
    job = _submit(session, broker, settings, "audit", spec.model_dump(mode="json"), labels_of(body))
    response.headers["Location"] = f"/jobs/{job.id}"
    return AuditJobPublic.model_validate(_public(session, job))


def _public(session: Session, job: Job, positions: dict[str, int] | None = None) -> AnyJobPublic:
    """The Job, with its place in the queue (from `positions` when the caller read them all)."""
    place = positions.get(job.id) if positions is not None else store.queue_position(session, job)
    return job_public(job, queue_position=place)


def _empty_is_none(value: object) -> object:
    return value or None  # `?status=&kind=` (the contract's own example) means no filter


def _one_of(field: str, allowed: tuple[str, ...]) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise ValueError(f"unknown {field} {value!r}; expected one of {list(allowed)}")
        return value

    return AfterValidator(check)


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


SEARCH_CHARS = 200  # longer than any name (100) or tag (40); a note is searched by its parts
DATASETS: tuple[str, ...] = get_args(DatasetSpec.model_fields["name"].annotation)
MODELS: tuple[str, ...] = get_args(ModelSpec.model_fields["name"].annotation)
StatusFilter = Annotated[JobStatus | None, BeforeValidator(_empty_is_none), Query(description="only this status")]
KindFilter = Annotated[JobKind | None, BeforeValidator(_empty_is_none), Query(description="only this kind")]
TagFilter = Annotated[
    Annotated[str, StringConstraints(max_length=TAG_CHARS)] | None,
    BeforeValidator(_empty_is_none),
    AfterValidator(_no_nul),
    Query(description="only jobs with this tag (exactly)"),
]
Search = Annotated[
    Annotated[str, StringConstraints(max_length=SEARCH_CHARS)] | None,
    BeforeValidator(_empty_is_none),
    AfterValidator(_no_nul),
    Query(description="a case-insensitive part of the name, the note, the id or a tag"),
]
DatasetFilter = Annotated[
    str | None,
    BeforeValidator(_empty_is_none),
    _one_of("dataset", DATASETS),
    Query(description="only jobs on this dataset (params.dataset.name)", json_schema_extra={"enum": list(DATASETS)}),
]
ModelFilter = Annotated[
    str | None,
    BeforeValidator(_empty_is_none),
    _one_of("model", MODELS),
    Query(description="only jobs of this model (params.model.name)", json_schema_extra={"enum": list(MODELS)}),
]
Sort = Annotated[
    store.JobSort,
    Query(
        description="created: newest first | name: A-Z | best, last: the best or last epoch's test accuracy, "
        "highest first | duration: longest first; a leading - reverses; jobs without a name, an accuracy or a "
        "start come last"
    ),
]


@router.get("", responses=UNAVAILABLE)
def list_jobs(
    session: SessionDep,
    status: StatusFilter = None,
    kind: KindFilter = None,
    tag: TagFilter = None,
    q: Search = None,
    dataset: DatasetFilter = None,
    model: ModelFilter = None,
    sort: Sort = "created",
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobsPublic:
    """Jobs matching every filter given, in the order `sort` names, with the total matching the filters."""
    filters = store.JobFilters(status=status, kind=kind, tag=tag, q=q, dataset=dataset, model=model)
    jobs, total = store.list_jobs(session, filters, sort=sort, limit=limit, offset=offset)
    positions = store.queue_positions(session) if any(job.status == "queued" for job in jobs) else {}
    for job in jobs:
        metrics_cache.seen(job.id, job_tag(job.status, job.progress))
    return JobsPublic(jobs=[_public(session, job, positions) for job in jobs], total=total)


def _job_or_404(session: Session, job_id: str) -> Job:
    job = store.get_job(session, job_id)
    if job is None:
        raise store.JobNotFound(job_id)
    metrics_cache.seen(job.id, job_tag(job.status, job.progress))  # its metrics are at least this fresh
    return job


@router.get("/{job_id}", responses=UNKNOWN_JOB | UNAVAILABLE)
def get_job(job_id: str, session: SessionDep) -> JobPublic:
    return _public(session, _job_or_404(session, job_id))


@router.patch("/{job_id}", responses=UNKNOWN_JOB | UNAVAILABLE)
def update_job(job_id: str, labels: JobLabelsUpdate, session: SessionDep) -> JobPublic:
    """Set any of the job's name, tags and note, whatever its status (they never change what trains)."""
    return _public(session, store.set_labels(session, job_id, **labels.values()))


CONFLICT_DELETE: Responses = {
    409: {
        "description": "the job is queued or running (cancel it first), a queued or running train job takes its "
        "LR suggestion, or, without force=true, its checkpoint is the latest one"
    }
}


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=UNKNOWN_JOB | CONFLICT_DELETE | UNAVAILABLE,
)
def delete_job(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    force: Annotated[
        bool, Query(description="also when its checkpoint is the latest one (/predict?checkpoint=latest's)")
    ] = False,
) -> Response:
    """Remove a job that ended: its record, epochs, artifacts and checkpoint, and its files under
    ARTIFACTS_DIR."""
    deleted = store.delete_job(session, job_id, force=force)
    metrics_cache.forget(job_id)
    remove_job_files(settings.ARTIFACTS_DIR, deleted.job_id, deleted.paths)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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
    return _public(session, job)


NOT_MODIFIED: Responses = {304: {"description": "If-None-Match names the current metrics: the client has them"}}


@router.get(
    "/{job_id}/metrics",
    response_model=TrainMetricsPublic | LRFinderMetricsPublic | AuditMetricsPublic,
    responses=UNKNOWN_JOB | UNAVAILABLE | NOT_MODIFIED,
)
async def get_metrics(
    job_id: str,
    settings: SettingsDep,
    since_epoch: Annotated[int, Query(ge=0, le=MAX_EPOCHS, description="train jobs: only epochs after this one")] = 0,
    if_none_match: Annotated[str | None, Header(description="the ETag of the metrics the client has")] = None,
) -> Response:
    """A train job's epoch records (and, once finished, per-class accuracy), an LR-finder curve, or an
    audit's folds and label issues.
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
) -> tuple[TrainMetricsPublic | LRFinderMetricsPublic | AuditMetricsPublic, Tag]:
    with session_for(settings.DATABASE_URL) as session:
        job = _job_or_404(session, job_id)
        return _metrics(session, job, since_epoch), job_tag(job.status, job.progress)


def _metrics(
    session: Session, job: Job, since_epoch: int
) -> TrainMetricsPublic | LRFinderMetricsPublic | AuditMetricsPublic:
    result = job.result or {}
    if job.kind == "audit":
        return AuditMetricsPublic.model_validate(
            {"job_id": job.id, "status": job.status, "warnings": []}
            | {key: result[key] for key in AuditMetricsPublic.model_fields if key in result}
        )
    if job.kind == "lr_finder":
        # before its result (running, or failed), the curve so far that the worker keeps with its progress
        curve = result if "lrs" in result else (job.progress or {}).get("curve") or {}
        return LRFinderMetricsPublic(
            job_id=job.id,
            status=job.status,  # type: ignore[arg-type]
            lrs=curve.get("lrs", []),
            losses=curve.get("losses", []),
            smoothed_losses=curve.get("smoothed_losses", []),
            # a job stored before the trend was recorded suggested on its smoothed curve
            trend_losses=curve.get("trend_losses", curve.get("smoothed_losses", [])),
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
        faithfulness=result.get("faithfulness"),
        calibration=result.get("calibration"),
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
