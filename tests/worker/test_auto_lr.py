"""lr "auto" in the worker: the LR-finder job's suggestion is taken, refused when there is none (a
job that changed after the API admitted the train job), and a finder that ran with other settings
than the training job is named in the train job's warnings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from ml.specs import LRFinderSpec, TrainSpec
from worker.reporting import StoreReporter
from worker.runs import JobRun, resolve_auto_lr

DATASET = {"name": "fashion_mnist", "train_subset": 100}


def put_job(session: Session, *, kind: str, params: dict[str, Any], result: dict[str, Any] | None = None) -> str:
    """A job that a worker has claimed and, with a result, finished (succeeded)."""
    job_id = store.create_job(session, kind=kind, params=params).id
    assert store.claim_job(session, job_id, worker="test-worker", lease_seconds=60) is not None
    if result is not None:
        store.finish_job(session, job_id, status="succeeded", result=result)
    return job_id


def finder(session: Session, *, suggested_lr: float | None = 0.02, **spec: Any) -> str:
    params = LRFinderSpec.model_validate({"dataset": DATASET, **spec}).model_dump(mode="json")
    result = {"suggested_lr": suggested_lr, "suggestions": {"steepest": suggested_lr}}
    return put_job(session, kind="lr_finder", params=params, result=result)


def auto(job_id: str, **spec: Any) -> TrainSpec:
    return TrainSpec.model_validate({"dataset": DATASET, "optimizer": {"lr": "auto", "lr_finder_job": job_id}, **spec})


def test_the_suggestion_of_a_finder_run_like_the_job_is_taken_without_warning(settings: Settings, session: Session):
    job_id = finder(session, model={"width": 8}, batch_size=64)
    spec, warnings = resolve_auto_lr(settings, auto(job_id, model={"width": 8}, batch_size=64, epochs=3))
    assert spec.optimizer.lr == 0.02 and spec.optimizer.lr_finder_job is None and warnings == []


def test_a_finder_run_otherwise_is_named_field_by_field_with_both_values(settings: Settings, session: Session):
    job_id = finder(
        session,
        model={"name": "resnet18", "width": 8},
        batch_size=128,
        optimizer={"weight_decay": 0.0},
        dataset={"name": "fashion_mnist", "train_subset": 500},  # a smaller subset is no difference
    )
    spec = auto(
        job_id,
        model={"name": "custom_resnet", "width": 16},
        batch_size=512,
        label_smoothing=0.1,
        dataset={"name": "cifar10"},
    )
    _, warnings = resolve_auto_lr(settings, spec)
    assert len(warnings) == 1
    for named in (
        'model.name "resnet18" (this job: "custom_resnet")',
        "model.width 8 (this job: 16)",
        "batch_size 128 (this job: 512)",
        "optimizer.weight_decay 0.0 (this job: 0.0005)",
        "label_smoothing 0.0 (this job: 0.1)",
        'dataset.name "fashion_mnist" (this job: "cifar10")',
    ):
        assert named in warnings[0], (named, warnings[0])
    assert job_id in warnings[0] and "subset" not in warnings[0]


def test_a_finder_without_a_suggestion_is_refused_saying_why(settings: Settings, session: Session):
    job_id = finder(session, suggested_lr=None)
    with pytest.raises(ValueError, match="gave no suggestion: its loss never fell clearly.*lower start_lr"):
        resolve_auto_lr(settings, auto(job_id))


def test_a_finder_that_is_not_a_succeeded_lr_finder_job_is_refused(settings: Settings, session: Session):
    running = put_job(session, kind="lr_finder", params=LRFinderSpec(dataset=DATASET).model_dump(mode="json"))
    with pytest.raises(ValueError, match=f"lr_finder job '{running}' is not a succeeded LR-finder job"):
        resolve_auto_lr(settings, auto(running))


def test_the_train_job_reports_the_mismatch_among_its_warnings(
    settings: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
):
    job_id = finder(session, batch_size=32)
    trained_with = []

    def fake_train(spec: TrainSpec, *, out_dir: Path, **_: Any) -> SimpleNamespace:
        trained_with.append(spec.optimizer.lr)
        out_dir.mkdir(parents=True)
        metrics = {"warnings": ["an augmentation warning"], "best": None}
        return SimpleNamespace(metrics=metrics, artifacts=[], best_checkpoint=None, stop_reason="completed")

    monkeypatch.setattr("worker.runs.train", fake_train)
    train_id = put_job(session, kind="train", params=auto(job_id).model_dump(mode="json"))
    run = JobRun(train_id, settings, StoreReporter(train_id, settings.DATABASE_URL))
    outcome = run.train(auto(job_id, batch_size=256))
    assert trained_with == [0.02] and outcome.result["lr"] == 0.02
    mismatch, advice = outcome.result["warnings"]
    assert "batch_size 32 (this job: 256)" in mismatch and advice == "an augmentation warning"
