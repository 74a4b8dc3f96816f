"""A spec whose training step cannot fit is refused before anything is allocated: at submission when
WORKER_MEMORY_MB is set, else by the worker at once, against its device's memory, with the estimate and
the budget in the job's error; never an out-of-memory kill followed by redeliveries."""

from __future__ import annotations

import time

from api_support import FakeBroker, make_client
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from ml.specs import TrainSpec
from worker.tasks import run_job

HUGE = {
    "dataset": {"name": "fashion_mnist"},
    "model": {"name": "resnet18", "width": 256},
    "batch_size": 4096,
}


def test_the_estimate_grows_with_what_a_step_holds() -> None:
    small = TrainSpec.model_validate({"dataset": {"name": "cifar10"}, "batch_size": 128})
    assert 1.5 * 2**30 < small.memory_estimate() < 3 * 2**30  # ResNet18 at 32 px, batch 128: about 2 GiB
    double = TrainSpec.model_validate({"dataset": {"name": "cifar10"}, "batch_size": 256})
    assert 1.8 < double.memory_estimate() / small.memory_estimate() < 2.0
    assert TrainSpec.model_validate(HUGE).memory_estimate() > 100 * 2**30
    subset = TrainSpec.model_validate(HUGE | {"dataset": {"name": "fashion_mnist", "train_subset": 100}})
    assert subset.memory_estimate() < TrainSpec.model_validate(HUGE).memory_estimate() / 10  # batches of 100


def test_with_a_budget_the_api_refuses_it_at_submission(configure) -> None:
    configure(WORKER_MEMORY_MB=4096)
    broker = FakeBroker()
    with make_client(broker) as client:
        refused = client.post("/jobs/train", json=HUGE)
        assert refused.status_code == 422
        error = refused.json()["detail"][0]
        assert error["loc"] == ["body", "batch_size"]
        assert "GiB for a training step" in error["msg"] and "4.0 GiB of WORKER_MEMORY_MB" in error["msg"]
        assert client.post("/jobs/lr-finder", json=HUGE | {"num_iter": 10}).status_code == 422
        assert client.post("/jobs/train", json=HUGE | {"batch_size": 32, "model": {"width": 8}}).status_code == 202
    assert len(broker.sent) == 1


def test_without_one_the_worker_fails_it_at_once_against_its_device(settings: Settings, session: Session) -> None:
    params = TrainSpec.model_validate(HUGE).model_dump(mode="json")
    job_id = store.create_job(session, kind="train", params=params).id
    began = time.monotonic()
    assert run_job(job_id, "train", params) == "failed"
    assert time.monotonic() - began < 30  # no data loaded, no model built
    job = store.get_job(session, job_id)
    assert job is not None and job.status == "failed" and job.attempts == 1
    assert job.error is not None and "GiB for a training step" in job.error and "this worker's" in job.error
    assert store.list_epochs(session, job_id) == []
