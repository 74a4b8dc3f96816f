"""A worker shutting down (Celery's worker_shutting_down signal, sent on SIGTERM or Ctrl-C) puts its
running job back in the queue, sent to the broker again, without using an attempt and keeping its
finished epochs; the next delivery resumes it. The task called in-process on tiny Fashion-MNIST."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from celery import signals
from celery.exceptions import WorkerTerminate
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from ml.specs import LRFinderSpec, TrainSpec
from service.broker import get_broker
from worker.reporting import StoreReporter
from worker.shutdown import SHUTDOWN
from worker.tasks import run_job

TINY = {
    "dataset": {"name": "fashion_mnist", "train_subset": 100, "test_subset": 50},
    "model": {"width": 2},
    "batch_size": 32,
}


@pytest.fixture
def shutdown(settings: Settings) -> Iterator[threading.Event]:
    """The worker's shutdown flag, taken back afterwards; this test's queue is deleted."""
    SHUTDOWN.clear()
    yield SHUTDOWN
    SHUTDOWN.clear()
    redis.Redis.from_url(settings.REDIS_URL).delete(settings.JOB_QUEUE)


def test_sigterm_requeues_a_training_job_and_the_next_delivery_resumes_it(
    settings: Settings, session: Session, shutdown: threading.Event
) -> None:
    params = TrainSpec.model_validate({**TINY, "epochs": 8, "gradcam_misclassified": 0}).model_dump(mode="json")
    job_id = store.create_job(session, kind="train", params=params).id
    returned: list[str] = []
    worker = threading.Thread(target=lambda: returned.append(run_job(job_id, "train", params)))
    worker.start()
    deadline = time.monotonic() + 120
    while not store.list_epochs(session, job_id):
        assert time.monotonic() < deadline and worker.is_alive(), "no epoch finished"
        time.sleep(0.05)
    signals.worker_shutting_down.send(sender="test@host", sig="SIGTERM", how="Warm", exitcode=0)
    worker.join(timeout=120)
    assert returned == ["requeued"]
    job = store.get_job(session, job_id)
    assert job is not None and job.status == "queued" and job.error is None and job.finished_at is None
    assert job.attempts == 0 and job.worker is None and job.heartbeat_at is None
    kept = store.list_epochs(session, job_id)
    assert 1 <= len(kept) < 8, "the job finished before the shutdown"
    assert (settings.ARTIFACTS_DIR / job_id / "checkpoints" / "last" / "manifest.json").is_file()
    # nothing half-registered: no report, no checkpoint row; only the live LR steps of the kept epochs
    assert [a.name for a in store.list_artifacts(session, job_id)] == [
        "loss_steps.json",
        "lr_steps.json",
    ] and job.checkpoint_id is None
    assert get_broker(settings).queued_ids() == {job_id}  # sent again at once, not after QUEUED_GRACE_SECONDS

    shutdown.clear()  # the next worker
    assert run_job(job_id, "train", params) == "succeeded"
    job = store.get_job(session, job_id)
    assert job is not None and job.attempts == 1 and job.checkpoint_id is not None
    epochs = store.list_epochs(session, job_id)
    assert [record["epoch"] for record in epochs] == list(range(1, 9))  # each once
    assert epochs[: len(kept)] == kept  # resumed from, not trained again


@pytest.mark.parametrize("raised", [None, NotImplementedError, WorkerTerminate], ids=["warm", "cold", "hard"])
def test_an_lr_finder_job_is_requeued_by_any_shutdown_and_starts_over(
    settings: Settings, session: Session, shutdown: threading.Event, raised: type[BaseException] | None
) -> None:
    """warm: SIGTERM or a first Ctrl-C; cold: a second Ctrl-C, where Celery's attempt to cancel the
    solo pool's job raises NotImplementedError into it; hard: a third, raising WorkerTerminate."""
    params = LRFinderSpec.model_validate({**TINY, "num_iter": 8}).model_dump(mode="json")
    job_id = store.create_job(session, kind="lr_finder", params=params).id

    def celery_raises(_: StoreReporter) -> bool:
        raise raised("raised by Celery's signal handler")  # type: ignore[misc]

    shutdown.set()
    with pytest.MonkeyPatch.context() as patch:
        if raised is not None:
            patch.setattr(StoreReporter, "should_stop", celery_raises)
        if raised is WorkerTerminate:
            with pytest.raises(WorkerTerminate):  # it must still end the worker
                run_job(job_id, "lr_finder", params)
        else:
            assert run_job(job_id, "lr_finder", params) == "requeued"
    job = store.get_job(session, job_id)
    assert job is not None and job.status == "queued" and job.attempts == 0 and job.error is None
    assert get_broker(settings).queued_ids() == {job_id}

    shutdown.clear()
    assert run_job(job_id, "lr_finder", params) == "succeeded"
    job = store.get_job(session, job_id)
    assert job is not None and job.attempts == 1 and job.result is not None and 0 < len(job.result["lrs"]) <= 8
