"""GET /metrics: Prometheus text with requests by route, predictions, jobs by status, queue depth,
job durations and heartbeat ages; behind the key when one is set."""

from __future__ import annotations

from datetime import timedelta

from api_support import FakeBroker, make_client, put_job
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.db import Job, utcnow


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_jobs_queue_durations_and_heartbeats(configure, session: Session) -> None:
    configure()
    done = put_job(session, status="succeeded")
    session.execute(update(Job).where(Job.id == done.id).values(started_at=utcnow() - timedelta(seconds=45)))
    session.commit()
    running = put_job(session, status="running")
    put_job(session, status="queued", kind="lr_finder")
    broker = FakeBroker(queue=["a", "b", "c"])
    with make_client(broker) as client:
        for _ in range(3):
            client.get(f"/jobs/{done.id}")
        client.get("/jobs/no-such-job")
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    route = "/jobs/{job_id}"
    assert got[("lrcam_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] >= 3
    assert got[("lrcam_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] >= 1
    assert got[("lrcam_http_request_duration_seconds_count", (("method", "GET"), ("route", route)))] >= 4
    assert got[("lrcam_jobs", (("kind", "train"), ("status", "succeeded")))] == 1
    assert got[("lrcam_jobs", (("kind", "lr_finder"), ("status", "queued")))] == 1
    assert got[("lrcam_queue_depth", ())] == 3
    assert got[("lrcam_job_duration_seconds_bucket", (("kind", "train"), ("le", "30.0")))] == 0
    assert got[("lrcam_job_duration_seconds_bucket", (("kind", "train"), ("le", "60.0")))] == 1
    heartbeat = [
        value
        for (name, labels), value in got.items()
        if name == "lrcam_worker_heartbeat_age_seconds" and ("job_id", running.id) in labels
    ]
    assert len(heartbeat) == 1 and 0 <= heartbeat[0] < 60


def test_metrics_are_behind_the_key(configure) -> None:
    configure(API_KEY="s3cret-key-0123456789")
    with make_client(FakeBroker()) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-key-0123456789"}).status_code == 200
