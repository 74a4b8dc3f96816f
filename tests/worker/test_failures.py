"""A job that cannot write its files (a full disk) or runs out of GPU memory fails with a clear error,
and the same worker process goes on to run the next job."""

from __future__ import annotations

import errno
import weakref
from types import ModuleType

import pytest
import torch
from sqlalchemy.orm import Session

from core import store
from core.db import Job
from ml import run, trainer
from ml.models import build_model
from ml.specs import LRFinderSpec, TrainSpec
from worker.tasks import run_job

TINY = {
    "dataset": {"name": "fashion_mnist", "train_subset": 64, "test_subset": 32},
    "model": {"width": 2},
    "batch_size": 32,
}
ONE_EPOCH = TrainSpec.model_validate({**TINY, "epochs": 1, "gradcam_misclassified": 0}).model_dump(mode="json")


def failed_train_job(
    session: Session, patch: pytest.MonkeyPatch, name: str, replacement: object, *, module: ModuleType = trainer
) -> Job:
    """A one-epoch train job run by the worker task with `<module>.<name>` (ml.trainer's by default)
    replaced: it must fail."""
    job_id = store.create_job(session, kind="train", params=ONE_EPOCH).id
    patch.setattr(module, name, replacement)
    assert run_job(job_id, "train", ONE_EPOCH) == "failed"
    job = store.get_job(session, job_id)
    assert job is not None and job.status == "failed" and job.finished_at is not None and job.error is not None
    return job


def test_a_full_disk_fails_the_job_clearly_and_the_worker_takes_the_next(settings, session: Session) -> None:
    def disk_full(folder, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    with pytest.MonkeyPatch.context() as patch:
        job = failed_train_job(session, patch, "save_checkpoint", disk_full)
    assert job.error.startswith("could not read or write files")
    assert "No space left on device" in job.error and "checkpoints" in job.error

    params = LRFinderSpec.model_validate({**TINY, "num_iter": 3}).model_dump(mode="json")
    next_id = store.create_job(session, kind="lr_finder", params=params).id
    assert run_job(next_id, "lr_finder", params) == "succeeded"


def test_cuda_out_of_memory_names_the_job_s_settings_frees_its_model_and_the_worker_goes_on(session: Session) -> None:
    models: list[weakref.ref[torch.nn.Module]] = []
    freed_before_empty_cache: list[bool] = []

    def model_out_of_memory(spec, **kwargs):
        model = build_model(spec, **kwargs)
        models.append(weakref.ref(model))

        def forward(*_: torch.Tensor) -> torch.Tensor:
            # As on a GPU from here on (the job itself chose the CPU): release_memory empties the cache.
            patch.setattr(torch.cuda, "is_available", lambda: True)
            patch.setattr(torch.cuda, "empty_cache", lambda: freed_before_empty_cache.append(models[0]() is None))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.forward = forward
        return model

    with pytest.MonkeyPatch.context() as patch:
        job = failed_train_job(session, patch, "build_model", model_out_of_memory, module=run)
    assert job.error == "CUDA out of memory at batch_size 32, width 2: lower batch_size or width"
    assert freed_before_empty_cache == [True]  # the traceback no longer held the model when the cache was emptied

    next_id = store.create_job(session, kind="train", params=ONE_EPOCH).id
    assert run_job(next_id, "train", ONE_EPOCH) == "succeeded"
    assert [record["epoch"] for record in store.list_epochs(session, next_id)] == [1]
