"""Checks on a job request that need more than its schema: the store (an "auto" learning rate's
LR-finder job) and the disk (an image folder under DATA_DIR). Failures are FastAPI's 422 shape,
naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from core import store
from ml.specs import CommonSpec, DatasetSpec, TrainSpec, no_suggestion


def invalid(loc: tuple[str | int, ...], message: str, value: Any) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


def check_lr_finder_job(session: Session, spec: TrainSpec) -> None:
    """For lr "auto": the referenced job must be a succeeded LR-finder job with a suggestion."""
    job_id = spec.optimizer.lr_finder_job
    if spec.optimizer.lr != "auto" or job_id is None:
        return
    loc = ("body", "optimizer", "lr_finder_job")
    job = store.get_job(session, job_id)
    if job is None:
        raise invalid(loc, f"no job with id {job_id!r}; expected a succeeded lr_finder job", job_id)
    if job.kind != "lr_finder":
        raise invalid(loc, f"job {job_id!r} is a {job.kind!r} job; expected an lr_finder job", job_id)
    if job.status != "succeeded":
        raise invalid(loc, f"lr_finder job {job_id!r} is {job.status!r}; expected 'succeeded'", job_id)
    if not (job.result or {}).get("suggested_lr"):
        raise invalid(loc, no_suggestion(job_id), job_id)


def check_memory(spec: CommonSpec, budget_mb: int | None) -> None:
    """With WORKER_MEMORY_MB set, a spec whose training step would not fit is refused here; unset,
    the worker checks it against its own device's memory when it starts the job."""
    if budget_mb is None:
        return
    refusal = spec.memory_refusal(budget_mb * 2**20, setting="WORKER_MEMORY_MB")
    if refusal is not None:
        raise invalid(("body", "batch_size"), refusal, spec.batch_size)


def check_dataset_on_disk(spec: DatasetSpec, data_dir: Path) -> None:
    """An image folder must be a folder under DATA_DIR (not escaping it) with train/ and test/."""
    if spec.name != "image_folder" or spec.path is None:
        return
    loc = ("body", "dataset", "path")
    root = data_dir.resolve()
    folder = (root / spec.path).resolve()
    if not folder.is_relative_to(root):
        raise invalid(loc, f"dataset.path {spec.path!r} leaves DATA_DIR; give a folder under it", spec.path)
    if not folder.is_dir():
        raise invalid(loc, f"dataset.path {spec.path!r} is not a folder under DATA_DIR", spec.path)
    missing = [split for split in ("train", "test") if not (folder / split).is_dir()]
    if missing:
        raise invalid(
            loc,
            f"dataset.path {spec.path!r} must be a folder under DATA_DIR holding train/<class>/* and "
            f"test/<class>/*; missing: {', '.join(f'{split}/' for split in missing)}",
            spec.path,
        )


def check_uploaded_dataset(session: Session, spec: DatasetSpec) -> None:
    """An uploaded dataset must exist and be `ready` (imported)."""
    if spec.name != "uploaded" or spec.id is None:
        return
    loc = ("body", "dataset", "id")
    dataset = store.get_dataset(session, spec.id)
    if dataset is None:
        raise invalid(loc, f"no uploaded dataset with id {spec.id!r}; GET /datasets lists them", spec.id)
    if dataset.status != "ready":
        why = f": {dataset.error}" if dataset.error else "; wait until its import is ready"
        raise invalid(loc, f"uploaded dataset {spec.id!r} is {dataset.status!r}, not 'ready'{why}", spec.id)
