"""Two API processes and two workers on one PostgreSQL store and one Redis queue, as replicas behind
a load balancer would run: jobs submitted to either API run once each, on one worker or the other,
none lost; one API process holds the reconciler lease; a client polling both APIs never sees a job's
metrics go back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import REDIS_URL, REPO, forget_queue, free_port, stop_processes
from sqlalchemy import create_engine, text
from stores import POSTGRES_URL, skip_without_postgres
from stores import postgres_schema_url as postgres_schema_url_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOBS = 6
LR_FINDER = {
    "dataset": {"name": "fashion_mnist", "train_subset": 200},
    "model": {"name": "resnet18", "width": 2},
    "batch_size": 32,
    "num_iter": 8,
}
TRAIN = {
    "dataset": {"name": "fashion_mnist", "train_subset": 200, "test_subset": 100},
    "model": {"name": "resnet18", "width": 2},
    "epochs": 3,
    "batch_size": 64,
    "gradcam_misclassified": 0,
}


class Cluster:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
        self.processes: dict[str, subprocess.Popen] = {}
        self.http = httpx.Client(timeout=60)

    def start(self) -> None:
        for index, url in enumerate(self.urls):
            port = url.rsplit(":", 1)[1]
            self.spawn(f"api{index}", [sys.executable, "-m", "uvicorn", "service.main:app", "--port", port])
        for index in range(2):  # the default node name on both: the claim must still tell them apart
            self.spawn(
                f"worker{index}",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker.celery_app",
                    "worker",
                    "--pool=solo",
                    "--concurrency=1",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                ],
            )
        deadline = time.monotonic() + 120
        for url in self.urls:
            while True:
                self.check_alive()
                try:
                    if self.http.get(url + "/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the APIs were not ready in 120 s"
                time.sleep(0.3)
        for index in range(2):  # both take jobs from the start
            while b"ready." not in (self.tmp / f"worker{index}.log").read_bytes():
                self.check_alive()
                assert time.monotonic() < deadline + 120, f"worker{index} was not ready"
                time.sleep(0.3)

    def spawn(self, name: str, command: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the process writes it until it ends
        self.processes[name] = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited:\n{(self.tmp / f'{name}.log').read_text()[-4000:]}"

    def stop(self) -> None:
        stop_processes(self)  # type: ignore[arg-type] - it needs only .processes
        self.http.close()


@pytest.fixture(scope="module")
def cluster_store() -> Iterator[str]:
    """A schema of its own: the other e2e stack's reconciler must not see these jobs."""
    skip_without_postgres()
    with postgres_schema_url_of(POSTGRES_URL, prefix="cluster") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, cluster_store: str) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    queue = f"lrcam-cluster-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": cluster_store,
        "JOB_QUEUE": queue,
        "DATA_DIR": str(tmp / "data"),
        "ARTIFACTS_DIR": str(tmp / "artifacts"),
        "RECONCILE_SECONDS": "1",
        "QUEUED_GRACE_SECONDS": "5",
        "LRCAM_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "METRICS_CACHE_SECONDS": "2",
    }
    env.pop("API_KEY", None)
    running = Cluster(tmp, env)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        forget_queue(queue)


def test_jobs_sent_to_either_api_run_once_each_on_either_worker(cluster: Cluster, cluster_store: str) -> None:
    ids = []
    for index in range(JOBS):
        kind, spec = ("lr-finder", LR_FINDER) if index % 2 else ("train", TRAIN)
        response = cluster.http.post(cluster.urls[index % 2] + f"/jobs/{kind}", json=spec)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    held: dict[str, tuple[str, list]] = {}  # job id -> (ETag, epochs): what this client has seen
    deadline = time.monotonic() + 600
    while True:
        cluster.check_alive()
        jobs = [cluster.http.get(cluster.urls[i % 2] + f"/jobs/{job_id}").json() for i, job_id in enumerate(ids)]
        for turn, job_id in enumerate(ids[::2]):  # the train jobs' metrics, from one API then the other
            for url in cluster.urls[turn % 2 :] + cluster.urls[: turn % 2]:
                etag, epochs = held.get(job_id, ("", []))
                response = cluster.http.get(url + f"/jobs/{job_id}/metrics", headers={"If-None-Match": etag})
                if response.status_code == 200:  # 304: the client's copy is current
                    fresh = response.json()["epochs"]
                    assert len(fresh) >= len(epochs), "metrics went back"  # each process caches them for 2 s
                    held[job_id] = (response.headers["ETag"], fresh)
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs):
            break
        assert time.monotonic() < deadline, [job["status"] for job in jobs]
        time.sleep(0.5)
    assert [job["status"] for job in jobs] == ["succeeded"] * JOBS, [job["error"] for job in jobs]
    assert all(job["attempts"] == 1 for job in jobs), "a job ran twice"
    with create_engine(cluster_store).connect() as connection:
        rows = connection.execute(text("SELECT worker, attempts FROM jobs")).all()
        holders = connection.execute(text("SELECT holder FROM leases WHERE name = 'reconciler'")).scalars().all()
        duplicates = connection.execute(
            text("SELECT job_id, epoch FROM epoch_metrics GROUP BY job_id, epoch HAVING count(*) > 1")
        ).all()
    workers = {worker for worker, _ in rows}
    assert len(rows) == JOBS and len(workers) == 2, f"both workers, told apart by process: {workers}"
    assert len(holders) == 1 and duplicates == []
    for job_id in ids:
        log = cluster.http.get(cluster.urls[0] + f"/jobs/{job_id}/log").text
        assert log.count("job claimed by worker") == 1, log
