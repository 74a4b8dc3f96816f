"""The whole stack for end-to-end tests: a real `uvicorn service.main:app` and a real
`celery -A worker.celery_app worker` as subprocesses, on real Redis (a queue of this session's
own) and PostgreSQL (a schema of this session's own), with tmp DATA_DIR and ARTIFACTS_DIR."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from stores import POSTGRES_URL, skip_without_postgres
from stores import postgres_schema_url as postgres_schema_url_of
from e2e_support import LEASE_SECONDS, REDIS_URL, Stack, forget_queue, free_port, wait_ready


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    skip_without_postgres()  # the whole stack runs on PostgreSQL
    with postgres_schema_url_of(POSTGRES_URL, prefix="e2e") as url:
        yield url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_schema_url: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    queue = f"lrcam-e2e-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": REDIS_URL, "DATABASE_URL": postgres_schema_url, "JOB_QUEUE": queue,
           "DATA_DIR": str(tmp / "data"), "ARTIFACTS_DIR": str(tmp / "artifacts"),
           "JOB_LEASE_SECONDS": str(LEASE_SECONDS), "RECONCILE_SECONDS": "1", "QUEUED_GRACE_SECONDS": "3",
           "LRCAM_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           # the tests poll every 0.1 s for epochs of ~0.3 s: a cache this short stays in the path
           # without hiding a whole job (the default 0.5 s did: "the job finished before the kill")
           "METRICS_CACHE_SECONDS": "0.05"}  # fmt: skip
    for name in ("API_KEY", "CORS_ORIGINS", "MAX_UPLOAD_BYTES"):
        env.pop(name, None)
    running = Stack(url=f"http://127.0.0.1:{free_port()}", env=env, tmp=tmp)
    running.start_api()
    running.start_worker()
    try:
        wait_ready(running)
        yield running
    finally:
        for process in running.processes.values():
            process.terminate()
        for process in running.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        running.http.close()
        forget_queue(queue)


