"""Log lines carry the job and request they belong to (as JSON with LOG_FORMAT=json), and a job's
own lines are readable over HTTP, so that a failed job explains itself."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from api_support import FakeBroker, make_client

from core import logs, store
from core.db import session_for
from worker.tasks import run_job

DEAD_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.fixture(autouse=True)
def _restore_logging() -> None:
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "lrcam", False)]:
        root.removeHandler(handler)


def test_json_log_lines_carry_the_request_id(configure, capsys: pytest.CaptureFixture[str]) -> None:
    configure(LOG_FORMAT="json", DATABASE_URL=DEAD_POSTGRES_URL)
    with make_client(FakeBroker()) as client:
        response = client.get("/jobs")
    assert response.status_code == 503
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["request_id"] == response.headers["X-Request-ID"]]
    assert mine and mine[0]["level"] == "WARNING" and "GET /jobs" in mine[0]["message"]
    assert {"time", "logger", "job_id"} <= set(mine[0])


def test_a_failed_job_explains_itself_over_http(settings, configure, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("text", logging.INFO)  # what the worker's Celery logging signal does
    params = {"dataset": {"name": "image_folder", "path": "no-such-folder"}, "epochs": 1}
    with session_for(settings.DATABASE_URL) as session:
        job_id = store.create_job(session, kind="train", params=params).id
    assert run_job(job_id, "train", params) == "failed"
    worker_lines = [line for line in capsys.readouterr().err.splitlines() if f"job={job_id}" in line]
    assert any("job failed" in line for line in worker_lines)
    with make_client(FakeBroker()) as client:
        log = client.get(f"/jobs/{job_id}/log")
        job = client.get(f"/jobs/{job_id}").json()
        assert client.get("/jobs/nope/log").status_code == 404
        assert client.get(f"/jobs/{job_id}/log", params={"tail": 1}).text.count("\n") == 1
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert "train job claimed by worker" in log.text and "job failed" in log.text
    assert job["error"] in log.text and f"job={job_id}" in log.text
    assert "DATA_DIR" in job["error"], job["error"]  # named by its setting ...
    for server_path in (str(settings.DATA_DIR.resolve()), str(settings.ARTIFACTS_DIR.resolve()), sys.prefix):
        assert server_path not in job["error"] and server_path not in log.text  # ... never by its path


def test_a_job_log_is_bounded(tmp_path) -> None:
    handler = logs.JobLogHandler("j1", tmp_path, max_bytes=500)
    logger = logging.getLogger("lrcam.test.joblog")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    token = logs.job_id_var.set("j1")
    try:
        for i in range(100):
            logger.info("line %d of a chatty job", i)
    finally:
        logs.job_id_var.reset(token)
        logger.removeHandler(handler)
    logger.info("another job's line")  # not this job's: not kept
    text = (tmp_path / "job.log").read_text()
    assert len(text.encode()) < 500 + 200 and text.rstrip().endswith("later lines are in the worker's log")
    assert "line 0 of" in text and "another job" not in text
