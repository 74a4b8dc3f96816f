"""The Celery task called in-process on tiny real Fashion-MNIST: what it writes to the store for
each outcome, how it skips jobs it must not run, and how it reports (throttled) and heartbeats."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from api_support import put_job
from datasets import gray28_to_cifar, serve_folder, write_cifar_archive
from PIL import Image
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.db import Job, utcnow
from ml import downloads
from ml.specs import AuditSpec, LRFinderSpec, TrainSpec
from worker import reporting
from worker.failures import describe
from worker.outputs import live_artifacts
from worker.reporting import Heartbeat, StoreReporter
from worker.tasks import STORE_RETRIES, run_job

# Batch sizes that are powers of two: on a 2-core CPU, torch 2.14's oneDNN can corrupt the heap on a run
# at batch size 25 that follows another run in the same process.
TINY = {
    "dataset": {"name": "fashion_mnist", "train_subset": 100, "test_subset": 50},
    "model": {"width": 2},
    "batch_size": 32,
}
TRAIN_ARTIFACTS = {
    "samples.png",
    "accuracy.png",
    "loss.png",
    "lr.png",
    "confusion_matrix.png",
    "misclassified.png",
    "gradcam_misclassified.png",
    "gradcam_misclassified_true.png",
    "gradcam_correct.png",
    "metrics.json",
}


def submit(session: Session, kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = {"train": TrainSpec, "lr_finder": LRFinderSpec, "audit": AuditSpec}[kind].model_validate(body)
    params = spec.model_dump(mode="json")
    return store.create_job(session, kind=kind, params=params).id, params


def reload(session: Session, job_id: str) -> Job:
    job = store.get_job(session, job_id)
    assert job is not None
    return job


def test_lr_finder_then_a_train_job_with_its_suggested_lr(settings: Settings, session: Session) -> None:
    # A sweep whose loss falls clearly (4.5%) in 10 steps: from 1e-3, at width 8, without augmentation, its
    # trend smoothed at 0.1. Width 2 (the train job's) barely learns in 10 steps: nothing would be suggested.
    sweep = {"num_iter": 10, "start_lr": 1e-3, "end_lr": 1.0, "smooth_f": 0.1, "augmentation": "none"}
    finder_id, params = submit(session, "lr_finder", {**TINY, "model": {"width": 8}, **sweep})
    assert run_job(finder_id, "lr_finder", params) == "succeeded"
    finder = reload(session, finder_id)
    assert finder.status == "succeeded" and finder.error is None and finder.attempts == 1 and finder.worker
    assert finder.result is not None and 0 < len(finder.result["lrs"]) <= 10 and finder.result["suggested_lr"] > 0
    assert finder.progress["fraction"] == 1.0 and finder.finished_at >= finder.started_at  # type: ignore[operator]
    assert finder.progress["step"] == len(finder.result["lrs"]) and "curve" not in finder.progress  # the result has it
    assert {a.name for a in store.list_artifacts(session, finder_id)} >= {"lr_finder.png", "metrics.json"}
    lr = finder.result["suggested_lr"]

    body = {**TINY, "epochs": 1, "gradcam_misclassified": 2, "optimizer": {"lr": "auto", "lr_finder_job": finder_id}}
    train_id, params = submit(session, "train", body)
    assert run_job(train_id, "train", params) == "succeeded"
    job = reload(session, train_id)
    assert job.status == "succeeded" and job.result is not None and job.result["lr"] == lr
    assert any("model.width 8 (this job: 2)" in warning for warning in job.result["warnings"])
    assert job.result["stop_reason"] == "completed" and job.result["best"]["epoch"] == 1
    assert set(job.result["per_class_accuracy"]) == {
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    }
    epochs = store.list_epochs(session, train_id)
    assert [r["epoch"] for r in epochs] == [1] and epochs[0]["lr"] == pytest.approx(lr)
    artifacts = {a.name: a for a in store.list_artifacts(session, train_id)}
    assert set(artifacts) >= TRAIN_ARTIFACTS
    png = settings.ARTIFACTS_DIR / artifacts["confusion_matrix.png"].path
    assert png.read_bytes().startswith(b"\x89PNG") and Image.open(png).size[0] > 100
    checkpoint = store.get_checkpoint(session, job.checkpoint_id or "")
    assert checkpoint is not None and checkpoint.job_id == train_id and checkpoint.epoch == 1
    assert checkpoint.classes[1] == "Trouser" and checkpoint.dataset == "fashion_mnist"
    assert checkpoint.model == {"name": "resnet18", "width": 2}
    assert (settings.ARTIFACTS_DIR / checkpoint.path / "model.safetensors").is_file()


def test_an_audit_job_scores_the_training_set_and_registers_its_label_issues(
    settings: Settings, session: Session
) -> None:
    body = {**TINY, "epochs": 1, "folds": 2, "optimizer": {"lr": 0.05}, "augmentation": "none"}
    audit_id, params = submit(session, "audit", body)
    assert run_job(audit_id, "audit", params) == "succeeded"
    job = reload(session, audit_id)
    assert job.status == "succeeded" and job.result is not None and job.checkpoint_id is None
    assert [f["fold"] for f in job.result["folds"]] == [1, 2] and job.result["scored"] == 100
    assert job.result["stop_reason"] == "completed" and job.result["label_issues"] >= 0
    assert job.progress["fraction"] == 1.0 and store.list_epochs(session, audit_id) == []
    artifacts = {a.name for a in store.list_artifacts(session, audit_id)}
    assert {"label_issues.json", "metrics.json"} <= artifacts


def test_a_cifar10_job_downloads_it_first_with_progress_in_the_job(
    settings: Settings, session: Session, fmnist_arrays: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    images, labels = gray28_to_cifar(fmnist_arrays["train_images"][:64]), fmnist_arrays["train_labels"][:64]
    md5 = write_cifar_archive(served / "cifar-10-python.tar.gz", images, labels)
    monkeypatch.delenv("LRCAM_OFFLINE", raising=False)
    monkeypatch.setattr(downloads, "CIFAR10_MD5", md5)
    written = []
    real_heartbeat = store.heartbeat

    def heartbeat(session: Session, job_id: str, progress: dict | None = None, **fenced: Any) -> bool:
        written.append(progress)
        return real_heartbeat(session, job_id, progress, **fenced)

    monkeypatch.setattr(reporting.store, "heartbeat", heartbeat)
    body = {"dataset": {"name": "cifar10"}, "model": {"width": 2}, "batch_size": 32, "num_iter": 3}
    job_id, params = submit(session, "lr_finder", body)
    with serve_folder(served) as (url, requested):
        monkeypatch.setattr(downloads, "CIFAR10_URL", f"{url}/cifar-10-python.tar.gz")
        assert run_job(job_id, "lr_finder", params) == "succeeded"
    assert requested == ["/cifar-10-python.tar.gz"]
    size = (served / "cifar-10-python.tar.gz").stat().st_size
    downloading = [p for p in written if p and p.get("downloading") == "cifar10"]
    assert downloading and downloading[0]["total_bytes"] == size and "updated_at" in downloading[0]
    assert (settings.DATA_DIR / "cifar-10-batches-py" / "batches.meta").is_file()
    assert reload(session, job_id).progress["fraction"] == 1.0  # training's progress follows the download's


def test_cancel_a_running_train_job_keeps_its_epochs_and_checkpoint(settings: Settings, session: Session) -> None:
    job_id, params = submit(session, "train", {**TINY, "epochs": 50, "gradcam_misclassified": 0})
    worker = threading.Thread(target=run_job, args=(job_id, "train", params))
    worker.start()
    deadline = time.monotonic() + 120
    while not store.list_epochs(session, job_id):
        assert time.monotonic() < deadline and worker.is_alive(), "no epoch finished"
        time.sleep(0.2)
    assert store.request_cancel(session, job_id).status == "running"
    worker.join(timeout=120)
    job = reload(session, job_id)
    assert job.status == "cancelled" and job.error is None
    assert job.result is not None and job.result["stop_reason"] == "cancelled"
    assert 1 <= len(store.list_epochs(session, job_id)) < 50 and job.checkpoint_id is not None


def test_a_diverging_run_fails_with_a_readable_error(session: Session) -> None:
    body = {
        **TINY,
        "epochs": 10,
        "batch_size": 16,
        "scheduler": {"name": "none"},
        "optimizer": {"lr": 100, "momentum": 0, "weight_decay": 1},
    }  # weights grow x99 a step: inf in 20
    job_id, params = submit(session, "train", body)
    assert run_job(job_id, "train", params) == "failed"
    job = reload(session, job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error is not None and job.error.startswith("training diverged")
    assert "lower the learning rate" in job.error


def test_a_missing_dataset_fails_the_job_and_the_worker_goes_on(configure, session: Session) -> None:
    configure(DATA_DIR="/nonexistent")
    job_id, params = submit(session, "lr_finder", {"dataset": {"name": "image_folder", "path": "gone"}})
    assert run_job(job_id, "lr_finder", params) == "failed"
    assert "gone" in (reload(session, job_id).error or "")
    bad_kind = put_job(session, status="queued")
    assert run_job(bad_kind.id, "predict", {}) == "failed"
    assert "unknown job kind 'predict'" in (reload(session, bad_kind.id).error or "")


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled", "running"])
def test_jobs_that_must_not_run_are_skipped(session: Session, status: str) -> None:
    job = put_job(session, status=status)
    assert run_job(job.id, job.kind, job.params) == "skipped"
    again = reload(session, job.id)
    assert again.status == status and again.attempts == job.attempts


def test_a_redelivery_after_a_dead_worker_runs_it_again(session: Session) -> None:
    job_id, params = submit(session, "lr_finder", {**TINY, "num_iter": 3})
    store.claim_job(session, job_id, worker="dead", lease_seconds=60)
    session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    session.commit()
    assert run_job(job_id, "lr_finder", params) == "succeeded"
    job = reload(session, job_id)
    assert job.attempts == 2 and job.worker != "dead"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reporter_throttles_writes_and_polls(settings: Settings, session: Session) -> None:
    job = put_job(session, status="running")
    clock = Clock()
    reporter = StoreReporter(job.id, settings.DATABASE_URL, clock=clock)
    for step in range(1, 51):  # 50 reports within half a second: one write
        clock.now = step / 100
        reporter.on_progress({"step": step, "steps": 100, "fraction": step / 100})
    assert reload(session, job.id).progress["step"] == 1 and reporter.progress["step"] == 50
    clock.now = 1.5
    before = utcnow()
    reporter.on_progress({"step": 60, "steps": 100, "fraction": 0.6})
    written = reload(session, job.id).progress
    assert written["step"] == 60 and before <= datetime.fromisoformat(written["updated_at"]) <= utcnow()

    assert reporter.should_stop() is False
    store.request_cancel(session, job.id)
    assert reporter.should_stop() is False  # polled less than a second ago
    clock.now = 2.6
    assert reporter.should_stop() is True

    reporter.on_epoch({"epoch": 1, "test_acc": 0.5})
    assert store.list_epochs(session, job.id) == [{"epoch": 1, "test_acc": 0.5}]


def test_files_a_run_rewrites_every_epoch_are_readable_while_it_runs(settings: Settings, session: Session) -> None:
    job = put_job(session, status="running")
    root = settings.ARTIFACTS_DIR.resolve()
    out_dir = root / job.id
    reporter = StoreReporter(job.id, settings.DATABASE_URL)
    reporter.live_files = lambda: live_artifacts(out_dir=out_dir, root=root)
    reporter.on_epoch({"epoch": 1, "test_acc": 0.5})  # nothing written yet: nothing registered
    assert store.list_artifacts(session, job.id) == []
    out_dir.mkdir(parents=True)
    (out_dir / "lr_steps.json").write_text("[0.1, 0.2]")
    (out_dir / "accuracy.png").write_bytes(b"\x89PNG")  # not a live file: registered with the report only
    reporter.on_epoch({"epoch": 2, "test_acc": 0.6})
    reporter.on_epoch({"epoch": 2, "test_acc": 0.6})  # a redelivered epoch: still one artifact
    [artifact] = store.list_artifacts(session, job.id)
    assert (artifact.name, artifact.media_type, artifact.path) == (
        "lr_steps.json",
        "application/json",
        f"{job.id}/lr_steps.json",
    )


def test_reporter_stops_a_job_the_store_no_longer_runs(settings: Settings, session: Session) -> None:
    job = put_job(session, status="running")
    reporter = StoreReporter(job.id, settings.DATABASE_URL)
    store.fail_job(session, job.id, "worker died or lost contact")
    reporter.beat()
    assert reporter.lost and reporter.should_stop()
    assert not reporter.finish("succeeded") and reload(session, job.id).status == "failed"


def test_reporter_survives_a_store_that_is_down() -> None:
    reporter = StoreReporter("job", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    reporter.on_progress({"step": 1, "steps": 2, "fraction": 0.5})
    reporter.on_epoch({"epoch": 1})
    assert reporter.should_stop() is False and reporter.progress["step"] == 1 and not reporter.lost


def test_heartbeat_thread_keeps_the_lease_fresh(settings: Settings, session: Session) -> None:
    job = put_job(session, status="running")
    old = utcnow() - timedelta(minutes=5)
    session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=old))
    session.commit()
    with Heartbeat(StoreReporter(job.id, settings.DATABASE_URL), interval=0.05):
        time.sleep(0.3)
    assert reload(session, job.id).heartbeat_at > old + timedelta(minutes=4)  # type: ignore[operator]
    assert reporting.heartbeat_interval(120) == 10 and reporting.heartbeat_interval(6) == 2


def test_error_messages_say_what_to_change(tmp_path: Path) -> None:
    assert describe(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"), epoch=2) == (
        "CUDA out of memory: lower batch_size or width"
    )
    assert describe(FloatingPointError("nan"), epoch=4).startswith(
        "training diverged: loss became NaN/inf at epoch 4; lower the learning rate"
    )
    disk = describe(OSError(28, "No space left on device", str(tmp_path / "loss.png")), epoch=None)
    assert "No space left on device" in disk and "loss.png" in disk
    assert describe(ValueError("dataset.path 'x' missing"), epoch=None) == "dataset.path 'x' missing"
    assert describe(KeyError("boom"), epoch=None).startswith("internal error (KeyError)")


def test_a_store_that_is_down_retries_the_delivery_instead_of_dropping_it(configure) -> None:
    configure(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    with mock.patch.object(run_job, "retry", wraps=run_job.retry) as retry:
        result = run_job.apply(args=["job", "train", {}])  # eager: retries run at once
    assert retry.call_count == STORE_RETRIES + 1 and result.state == "FAILURE"
    assert "Connection refused" in str(result.result)
