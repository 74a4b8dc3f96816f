"""The reconciler keeps the broker in line with the store: dead workers' jobs are queued and sent
again (until MAX_JOB_ATTEMPTS), and queued jobs a restarted Redis lost are sent again, once each.
The last test restarts a real redis-server of its own under a running API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from api_support import TRAIN_PARAMS, FakeBroker, make_client, put_job
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import store
from core.db import Job, Lease, utcnow
from service.broker import BrokerUnavailable, get_broker
from service.reconciler import reconcile


def age(session: Session, job_id: str, *, created: float = 0, heartbeat: float | None = None) -> None:
    values = {"created_at": utcnow() - timedelta(seconds=created)}
    if heartbeat is not None:
        values["heartbeat_at"] = utcnow() - timedelta(seconds=heartbeat)
    session.execute(update(Job).where(Job.id == job_id).values(**values))
    session.commit()


def test_a_dead_workers_job_is_sent_again_then_failed_when_its_attempts_are_used_up(configure, session) -> None:
    settings = configure(JOB_LEASE_SECONDS=30, MAX_JOB_ATTEMPTS=2, QUEUED_GRACE_SECONDS=60)
    broker = FakeBroker()
    job = put_job(session, status="running")  # attempt 1, created just now (inside the grace period)
    age(session, job.id, heartbeat=120)
    assert reconcile(settings, broker).sent == [job.id]
    assert [sent[0] for sent in broker.sent] == [job.id] and store.get_job(session, job.id).status == "queued"
    assert reconcile(settings, broker).sent == []  # it is in the queue now: not sent twice

    assert store.claim_job(session, job.id, worker="second", lease_seconds=30) is not None  # attempt 2
    age(session, job.id, heartbeat=120)
    outcome = reconcile(settings, broker)
    failed = store.get_job(session, job.id)
    assert outcome.sent == [] and outcome.ended == [job.id] and failed.status == "failed"
    assert failed.error.startswith("worker died or lost contact") and "gave up after 2 attempt(s)" in failed.error


def test_one_api_process_reconciles_at_a_time(configure, session) -> None:
    settings = configure(JOB_LEASE_SECONDS=30, RECONCILE_SECONDS=5)
    job = put_job(session, status="running")
    age(session, job.id, heartbeat=120)
    first, second = FakeBroker(), FakeBroker()
    assert reconcile(settings, first, holder="api-a/1").sent == [job.id]
    assert reconcile(settings, second, holder="api-b/2").skipped and second.sent == []
    assert not reconcile(settings, first, holder="api-a/1").skipped  # renewed by its holder
    session.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))  # api-a died
    session.commit()
    assert not reconcile(settings, second, holder="api-b/2").skipped
    assert reconcile(settings, first, holder="api-a/1").skipped


def test_a_job_that_heart_beats_without_progress_is_requeued_then_failed_as_stalled(configure, session) -> None:
    settings = configure(JOB_LEASE_SECONDS=30, JOB_STALL_SECONDS=60, MAX_JOB_ATTEMPTS=2, QUEUED_GRACE_SECONDS=600)
    job = put_job(session, status="running")
    claim = store.Claim.of(store.get_job(session, job.id))
    assert store.heartbeat(session, job.id, {"epoch": 1, "step": 3}, claim=claim)
    session.execute(update(Job).where(Job.id == job.id).values(progress_at=utcnow() - timedelta(seconds=120)))
    session.commit()
    assert store.heartbeat(session, job.id, claim=claim)  # the heartbeat thread goes on; no progress
    assert reconcile(settings, FakeBroker()).sent == [job.id]
    assert not store.heartbeat(session, job.id, {"epoch": 1, "step": 4}, claim=claim)  # it lost the job

    again = store.Claim.of(store.claim_job(session, job.id, worker="w/2", lease_seconds=30))
    assert store.heartbeat(session, job.id, {"epoch": 1, "step": 1}, claim=again)
    assert reconcile(settings, FakeBroker()).sent == []  # progressing: left alone
    session.execute(update(Job).where(Job.id == job.id).values(progress_at=utcnow() - timedelta(seconds=120)))
    session.commit()
    assert reconcile(settings, FakeBroker()).ended == [job.id]
    failed = store.get_job(session, job.id)
    assert failed.status == "failed" and failed.error.startswith("stalled") and "JOB_STALL_SECONDS=60" in failed.error


def test_queued_jobs_the_broker_lost_are_sent_again_after_the_grace_period(configure, session) -> None:
    settings = configure(QUEUED_GRACE_SECONDS=30)
    broker = FakeBroker()
    lost, waiting, young = (put_job(session, status="queued") for _ in range(3))
    for job in (lost, waiting):
        age(session, job.id, created=120)
    broker.queue.append(waiting.id)  # still in Redis: waits its turn
    assert reconcile(settings, broker).sent == [lost.id]  # `young` may still be on its way to Redis
    assert reconcile(settings, broker).sent == []
    broker.down = True
    with pytest.raises(BrokerUnavailable, match="broker unreachable"):
        reconcile(settings, broker)


def test_the_api_reconciles_in_the_background(configure, session) -> None:
    configure(RECONCILE_SECONDS=0.1, QUEUED_GRACE_SECONDS=0)
    broker = FakeBroker()
    job = put_job(session, status="queued")  # recorded, but its message never reached the broker
    with make_client(broker):
        deadline = time.monotonic() + 10
        while not broker.sent:
            assert time.monotonic() < deadline, "the reconciler never sent the queued job"
            time.sleep(0.05)
    assert [sent[0] for sent in broker.sent] == [job.id]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throwaway redis-server without persistence: a restart loses every queued message."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder, self.process = port, folder, None

    def start(self) -> None:
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_redis_restart_loses_no_queued_job_and_only_submissions_get_503(configure, redis_server) -> None:
    settings = configure(
        REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0", RECONCILE_SECONDS=3600, QUEUED_GRACE_SECONDS=0
    )
    broker = get_broker(settings)
    with make_client() as client:  # the real broker
        ids = [client.post("/jobs/train", json=TRAIN_PARAMS).json()["id"] for _ in range(2)]
        assert broker.queued_ids() == set(ids)

        redis_server.stop()  # no worker took them; Redis restarts empty
        assert client.get("/jobs").json()["total"] == 2  # reads are answered throughout
        assert client.get(f"/jobs/{ids[0]}").json()["status"] == "queued"
        refused = client.post("/jobs/train", json=TRAIN_PARAMS)
        assert refused.status_code == 503 and "broker unreachable" in refused.json()["detail"]
        assert client.get("/ready").status_code == 503

        redis_server.start()
        assert broker.queued_ids() == set()  # the queue is gone with the old Redis
        third = client.post("/jobs/train", json=TRAIN_PARAMS)
        assert third.status_code == 202, third.text  # submissions work again at once
        assert reconcile(settings, broker).sent == ids  # the lost ones, oldest first
        assert broker.queued_ids() == {*ids, third.json()["id"]}
        assert reconcile(settings, broker).sent == []  # each is in the queue once
        statuses = [job["status"] for job in client.get("/jobs").json()["jobs"]]
        assert sorted(statuses) == ["failed", "queued", "queued", "queued"]  # the refused one says why
