"""One owner per job: a worker that lost its job (paused past its lease while another delivery took
the job over) writes nothing more and is told to stop; leases run on the store's clock; the claim
names the worker process; a job registers one checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import store
from core.db import Checkpoint, Job, session_for, utcnow
from core.store import ArtifactFile, Claim
from worker.reporting import StoreReporter
from worker.tasks import worker_name

PARAMS = {"dataset": {"name": "cifar10"}, "epochs": 3}
CHECKPOINT = dict(
    model={"name": "resnet18", "width": 4},
    dataset="cifar10",
    classes=["a", "b"],
    test_acc=0.5,
    epoch=1,
    path="x/checkpoints/best",
)


@pytest.fixture
def db(database_url: str) -> Iterator[Session]:
    with session_for(database_url) as session:
        yield session


def taken_over(db: Session) -> tuple[Claim, Claim]:
    """A job claimed by a first worker process, whose lease then ran out (it was paused), and
    claimed again by a second: the two claims."""
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    first = Claim.of(store.claim_job(db, job_id, worker="celery@gpu0/101", lease_seconds=60))
    db.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    db.commit()
    second = Claim.of(store.claim_job(db, job_id, worker="celery@gpu0/202", lease_seconds=60))
    assert (second.attempt, first.attempt) == (2, 1)
    return first, second


def test_a_worker_that_lost_its_job_writes_nothing_more(db: Session) -> None:
    first, second = taken_over(db)
    job_id = first.job_id
    assert store.add_epoch(db, job_id, {"epoch": 1, "test_acc": 0.9}, claim=second)
    assert not store.heartbeat(db, job_id, {"epoch": 7}, claim=first)
    assert not store.add_epoch(db, job_id, {"epoch": 1, "test_acc": 0.1}, claim=first)
    assert not store.add_epoch(db, job_id, {"epoch": 2, "test_acc": 0.1}, claim=first)
    assert not store.add_artifacts(db, job_id, [ArtifactFile("loss.png", "image/png", "x/loss.png")], claim=first)
    assert store.add_checkpoint(db, job_id=job_id, claim=first, **CHECKPOINT) is None
    assert not store.finish_job(db, job_id, status="succeeded", result={"stale": True}, claim=first)
    assert store.should_stop(db, job_id, claim=first) and not store.should_stop(db, job_id, claim=second)

    job = store.get_job(db, job_id)
    assert job is not None and job.status == "running" and job.worker == second.worker and job.progress == {}
    assert store.list_epochs(db, job_id) == [{"epoch": 1, "test_acc": 0.9}]
    assert store.list_artifacts(db, job_id) == [] and store.latest_checkpoint(db) is None
    assert store.heartbeat(db, job_id, {"epoch": 2}, claim=second)
    assert store.finish_job(db, job_id, status="succeeded", result={}, claim=second)


def test_the_worker_s_reporter_is_fenced_by_its_claim(database_url: str, db: Session) -> None:
    first, second = taken_over(db)
    stale = StoreReporter(first.job_id, database_url, claim=first)
    stale.on_epoch({"epoch": 1, "test_acc": 0.1})
    assert stale.lost and stale.should_stop()
    assert not stale.finish("succeeded", result={"stale": True})
    assert store.list_epochs(db, first.job_id) == []
    current = StoreReporter(second.job_id, database_url, claim=second)
    current.on_epoch({"epoch": 1, "test_acc": 0.8})
    assert not current.lost and not current.should_stop()
    assert store.list_epochs(db, second.job_id) == [{"epoch": 1, "test_acc": 0.8}]


def test_a_job_registers_one_checkpoint(db: Session) -> None:
    job_id = store.create_job(db, kind="train", params=PARAMS).id
    claim = Claim.of(store.claim_job(db, job_id, worker="w/1", lease_seconds=60))
    first = store.add_checkpoint(db, job_id=job_id, claim=claim, **CHECKPOINT)
    again = store.add_checkpoint(db, job_id=job_id, claim=claim, **(CHECKPOINT | {"epoch": 3, "test_acc": 0.7}))
    assert first is not None and again is not None and again.id == first.id
    rows = db.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
    assert len(rows) == 1 and rows[0].epoch == 3 and rows[0].test_acc == 0.7


def test_leases_run_on_the_store_s_clock(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker machine whose clock is an hour behind the API's: its heartbeats still count as now."""
    with session_for(postgres_url) as db:
        job_id = store.create_job(db, kind="train", params=PARAMS).id
        real = store.utcnow
        monkeypatch.setattr(store, "utcnow", lambda: real() - timedelta(hours=1))  # the worker's machine
        claim = Claim.of(store.claim_job(db, job_id, worker="w/1", lease_seconds=60))
        assert store.heartbeat(db, job_id, {"epoch": 1}, claim=claim)
        monkeypatch.setattr(store, "utcnow", lambda: real() + timedelta(hours=1))  # the API's machine
        reaped = store.reap_stale_jobs(db, lease_seconds=60, max_attempts=3)
        assert reaped.requeued == [] and reaped.ended == []
        assert store.claim_job(db, job_id, worker="w/2", lease_seconds=60) is None  # not taken over either
        job = store.get_job(db, job_id)
        assert job is not None and abs(job.heartbeat_at - real()) < timedelta(minutes=1)


def test_the_claim_names_the_worker_process() -> None:
    assert worker_name("celery@gpu-host") == f"celery@gpu-host/{os.getpid()}"
    assert worker_name(None).endswith(f"/{os.getpid()}")
