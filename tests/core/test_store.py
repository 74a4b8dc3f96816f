"""The job store on SQLite and on PostgreSQL: every transition the API and the worker make."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import store
from core.db import Job, session_for, utcnow
from core.store import ArtifactFile, JobNotFound, JobStateConflict

PARAMS = {"dataset": {"name": "cifar10", "train_subset": None}, "optimizer": {"lr": 0.05}, "epochs": 2}


@pytest.fixture
def db(database_url: str) -> Iterator[Session]:
    with session_for(database_url) as session:
        yield session


def backdate(session: Session, job_id: str, seconds: float) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
    session.commit()


def test_create_and_read_back(db: Session) -> None:
    job = store.create_job(db, kind="train", params=PARAMS)
    assert len(job.id) == 32 and job.status == "queued" and job.progress == {} and job.attempts == 0
    db.expunge_all()
    again = store.get_job(db, job.id)
    assert again is not None and again.params == PARAMS and again.kind == "train"
    assert again.created_at.tzinfo is not None and again.created_at.utcoffset() == timedelta(0)
    assert abs(again.created_at - utcnow()) < timedelta(seconds=30)
    assert store.get_job(db, "missing") is None


def test_list_filters_and_counts(db: Session) -> None:
    ids = [store.create_job(db, kind=kind, params=PARAMS).id for kind in ("train", "lr_finder", "train")]
    store.claim_job(db, ids[0], worker="w", lease_seconds=60)
    jobs, total = store.list_jobs(db)
    assert total == 3 and [j.id for j in jobs] == ids[::-1]
    jobs, total = store.list_jobs(db, kind="train", status="queued")
    assert total == 1 and jobs[0].id == ids[2]
    jobs, total = store.list_jobs(db, limit=1, offset=1)
    assert total == 3 and [j.id for j in jobs] == [ids[1]]


def test_claim_runs_a_job_once_per_live_delivery(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    job = store.claim_job(db, job_id, worker="gpu0@host", lease_seconds=60)
    assert job is not None and job.status == "running" and job.attempts == 1 and job.worker == "gpu0@host"
    assert job.started_at is not None and job.heartbeat_at is not None
    assert store.claim_job(db, job_id, worker="gpu1@host", lease_seconds=60) is None  # fresh heartbeat
    store.add_epoch(db, job_id, {"epoch": 1, "test_acc": 0.3})
    store.add_artifacts(db, job_id, [ArtifactFile("loss.png", "image/png", f"{job_id}/loss.png")])
    backdate(db, job_id, 120)
    again = store.claim_job(db, job_id, worker="gpu1@host", lease_seconds=60)  # its worker died: take over
    assert again is not None and again.attempts == 2 and again.worker == "gpu1@host"
    assert store.list_artifacts(db, job_id) == []  # registered again at the end of the run
    assert store.list_epochs(db, job_id) == [{"epoch": 1, "test_acc": 0.3}]  # kept: a train job resumes
    assert store.finish_job(db, job_id, status="succeeded", result={"best": None})
    assert store.claim_job(db, job_id, worker="w", lease_seconds=60) is None  # ended
    assert store.claim_job(db, "missing", worker="w", lease_seconds=60) is None


def test_cancel_queued_running_and_ended(db: Session) -> None:
    queued = store.create_job(db, kind="train", params=PARAMS).id
    job = store.request_cancel(db, queued)
    assert job.status == "cancelled" and job.finished_at is not None
    assert store.claim_job(db, queued, worker="w", lease_seconds=60) is None  # a cancelled job never starts
    with pytest.raises(JobStateConflict, match="already ended with status 'cancelled'"):
        store.request_cancel(db, queued)

    running = store.create_job(db, kind="lr_finder", params=PARAMS).id
    store.claim_job(db, running, worker="w", lease_seconds=60)
    assert not store.should_stop(db, running)
    job = store.request_cancel(db, running)
    assert job.status == "running" and job.cancel_requested and store.should_stop(db, running)
    assert store.finish_job(db, running, status="cancelled", result={"stop_reason": "cancelled"})
    with pytest.raises(JobNotFound, match="'missing'"):
        store.request_cancel(db, "missing")


def test_heartbeat_progress_and_stop_once_no_longer_running(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    assert not store.heartbeat(db, job_id)  # queued: nothing to refresh
    store.claim_job(db, job_id, worker="w", lease_seconds=60)
    backdate(db, job_id, 30)
    progress = {"epoch": 1, "epochs": 2, "step": 5, "steps": 10, "fraction": 0.25}
    assert store.heartbeat(db, job_id, progress)
    job = store.get_job(db, job_id)
    assert job is not None and job.progress == progress and utcnow() - job.heartbeat_at < timedelta(seconds=10)
    assert store.fail_job(db, job_id, "boom")
    assert not store.heartbeat(db, job_id) and store.should_stop(db, job_id)
    assert not store.finish_job(db, job_id, status="succeeded")  # a failed job stays failed
    assert store.get_job(db, job_id).error == "boom"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="succeeded"):
        store.finish_job(db, job_id, status="running")


def test_reap_requeues_dead_workers_jobs_then_fails_them_when_attempts_are_used_up(db: Session) -> None:
    stale, fresh, queued = (store.create_job(db, kind="train", params=PARAMS).id for _ in range(3))
    for job_id in (stale, fresh):
        store.claim_job(db, job_id, worker="w", lease_seconds=60)
    backdate(db, stale, 300)
    reaped = store.reap_stale_jobs(db, lease_seconds=60, max_attempts=2)
    assert reaped == store.Reaped(requeued=[stale], ended=[])
    job = store.get_job(db, stale)
    assert job is not None and job.status == "queued" and job.worker is None and job.error is None
    assert [j.id for j in store.queued_jobs(db, created_before=utcnow())] == [stale, queued]
    others = [store.get_job(db, job_id) for job_id in (fresh, queued)]
    assert [job.status for job in others if job] == ["running", "queued"]
    assert store.reap_stale_jobs(db, lease_seconds=60, max_attempts=2) == store.Reaped([], [])  # idempotent

    assert store.claim_job(db, stale, worker="w2", lease_seconds=60) is not None  # attempt 2 of 2
    backdate(db, stale, 300)
    assert store.reap_stale_jobs(db, lease_seconds=60, max_attempts=2) == store.Reaped([], [stale])
    job = store.get_job(db, stale)
    assert job is not None and job.status == "failed" and job.finished_at is not None
    assert job.error is not None and job.error.startswith("worker died or lost contact: no heartbeat since")
    assert "gave up after 2 attempt(s)" in job.error and job.finished_at.tzinfo == UTC


def test_reap_cancels_a_dead_workers_job_whose_cancel_was_pending(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    store.claim_job(db, job_id, worker="w", lease_seconds=60)
    store.request_cancel(db, job_id)
    backdate(db, job_id, 300)
    assert store.reap_stale_jobs(db, lease_seconds=60, max_attempts=3) == store.Reaped([], [job_id])
    assert store.get_job(db, job_id).status == "cancelled"  # type: ignore[union-attr]


def test_a_graceful_requeue_gives_the_attempt_back_and_touches_only_its_own_workers_job(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    claim = store.Claim.of(store.claim_job(db, job_id, worker="w", lease_seconds=60))
    store.add_epoch(db, job_id, {"epoch": 1, "test_acc": 0.5})
    another = store.Claim(job_id, "another", claim.attempt)
    assert store.requeue_job(db, job_id, claim=another, count_attempt=False) is None
    assert store.requeue_job(db, job_id, claim=claim, count_attempt=False) == "queued"
    job = store.get_job(db, job_id)
    assert job is not None and job.status == "queued" and job.attempts == 0 and job.worker is None
    assert job.heartbeat_at is None and store.list_epochs(db, job_id) == [{"epoch": 1, "test_acc": 0.5}]
    assert store.requeue_job(db, job_id, claim=claim, count_attempt=False) is None  # no longer running

    for _ in range(5):  # shutdowns never use up MAX_JOB_ATTEMPTS
        again = store.claim_job(db, job_id, worker="w", lease_seconds=60)
        assert again is not None
        assert store.requeue_job(db, job_id, claim=store.Claim.of(again), count_attempt=False) == "queued"
    assert store.get_job(db, job_id).attempts == 0  # type: ignore[union-attr]
    last = store.Claim.of(store.claim_job(db, job_id, worker="w", lease_seconds=60))
    store.request_cancel(db, job_id)
    assert store.requeue_job(db, job_id, claim=last, count_attempt=False) == "cancelled"  # a pending cancel wins
    assert store.get_job(db, job_id).status == "cancelled"  # type: ignore[union-attr]


def test_a_redelivery_keeps_the_epochs_already_stored(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    store.claim_job(db, job_id, worker="w", lease_seconds=60)
    store.add_epoch(db, job_id, {"epoch": 1, "test_acc": 0.5})
    backdate(db, job_id, 300)
    assert store.claim_job(db, job_id, worker="w2", lease_seconds=60) is not None
    assert store.list_epochs(db, job_id) == [{"epoch": 1, "test_acc": 0.5}]


def test_epochs_replace_and_filter(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    for epoch in (1, 2, 3, 2):
        store.add_epoch(db, job_id, {"epoch": epoch, "test_acc": epoch / 10})
    assert [r["epoch"] for r in store.list_epochs(db, job_id)] == [1, 2, 3]
    later = store.list_epochs(db, job_id, since_epoch=1)
    assert later == [{"epoch": 2, "test_acc": 0.2}, {"epoch": 3, "test_acc": 0.3}]


def test_artifacts_register_and_replace(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    store.add_artifacts(
        db,
        job_id,
        [ArtifactFile("a.png", "image/png", "x/a.png"), ArtifactFile("b.json", "application/json", "x/b.json")],
    )
    store.add_artifacts(db, job_id, [ArtifactFile("a.png", "image/png", "y/a.png")])
    listed = [(a.name, a.path) for a in store.list_artifacts(db, job_id)]
    assert listed == [("a.png", "y/a.png"), ("b.json", "x/b.json")]
    assert store.get_artifact(db, job_id, "b.json") is not None and store.get_artifact(db, job_id, "c") is None


def test_checkpoints_newest_first(db: Session) -> None:
    job_id, other_job = (store.create_job(db, kind="train", params=PARAMS).id for _ in range(2))
    assert store.latest_checkpoint(db) is None
    model = {"name": "resnet18", "width": 8}
    old = store.add_checkpoint(
        db,
        job_id=other_job,
        model=model,
        dataset="cifar10",
        classes=["a", "b"],
        test_acc=0.5,
        epoch=1,
        path="p",
        created_at=utcnow() - timedelta(minutes=5),
    )
    new = store.add_checkpoint(
        db, job_id=job_id, model=model, dataset="cifar10", classes=["a", "b"], test_acc=0.6, epoch=2, path="q"
    )
    assert store.latest_checkpoint(db).id == new.id  # type: ignore[union-attr]
    assert [c.id for c in store.list_checkpoints(db)] == [new.id, old.id]
    got = store.get_checkpoint(db, old.id)
    assert got is not None and got.classes == ["a", "b"] and got.model == model and got.created_at.tzinfo is not None
