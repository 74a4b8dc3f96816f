"""Jobs over HTTP: submit, validate, list, read, cancel, metrics, and the heartbeat lease."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from api_support import DEAD_REDIS_URL, LR_FINDER_PARAMS, TRAIN_PARAMS, FakeBroker, make_client, put_job
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.db import Job, utcnow
from ml.specs import LRFinderSpec, TrainSpec

JOB_FIELDS = {
    "id",
    "kind",
    "status",
    "params",
    "created_at",
    "started_at",
    "finished_at",
    "progress",
    "error",
    "checkpoint_id",
}


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"{value} is not UTC"
    return parsed


def test_post_train_records_the_validated_spec_then_enqueues_it(client: TestClient, broker: FakeBroker) -> None:
    response = client.post("/jobs/train", json=TRAIN_PARAMS)
    assert response.status_code == 202
    job = response.json()
    assert set(job) >= JOB_FIELDS
    assert job["kind"] == "train" and job["status"] == "queued" and job["error"] is None
    assert job["params"] == TrainSpec.model_validate(TRAIN_PARAMS).model_dump(mode="json")
    assert job["params"]["epochs"] == 50 and job["params"]["scheduler"]["name"] == "reduce_on_plateau"
    assert parse_time(job["created_at"]) <= utcnow() and job["started_at"] is None and job["finished_at"] is None
    assert broker.sent == [(job["id"], "train", job["params"])]
    assert client.get(f"/jobs/{job['id']}").json() == job


def test_post_lr_finder_defaults(client: TestClient, broker: FakeBroker) -> None:
    response = client.post("/jobs/lr-finder", json={"dataset": {"name": "cifar10"}})
    assert response.status_code == 202
    params = response.json()["params"]
    assert params == LRFinderSpec.model_validate({"dataset": {"name": "cifar10"}}).model_dump(mode="json")
    assert (params["start_lr"], params["end_lr"], params["num_iter"], params["step_mode"]) == (1e-7, 10, 100, "exp")
    assert broker.sent[0][1] == "lr_finder"


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"dataset": {"name": "mnist"}}, ["body", "dataset", "name"], ["cifar10", "fashion_mnist", "image_folder"]),
        ({**TRAIN_PARAMS, "epochs": 0}, ["body", "epochs"], ["greater than or equal to 1"]),
        ({**TRAIN_PARAMS, "model": {"name": "vgg"}}, ["body", "model", "name"], ["resnet18", "custom_resnet"]),
        ({**TRAIN_PARAMS, "scheduler": {"name": "step"}}, ["body", "scheduler"], ["reduce_on_plateau", "one_cycle"]),
        ({**TRAIN_PARAMS, "optimizer": {"lr": "auto"}}, ["body", "optimizer"], ["lr_finder_job"]),
        ({**TRAIN_PARAMS, "learning_rate": 0.1}, ["body", "learning_rate"], ["Extra inputs are not permitted"]),
        (
            {**TRAIN_PARAMS, "augmentation": [{"name": "NoSuchTransform"}]},
            ["body", "augmentation"],
            ["NoSuchTransform"],
        ),
    ],
)
def test_bad_train_specs_are_422_naming_the_field(
    client: TestClient, broker: FakeBroker, body: dict, loc: list[str], words: list[str]
) -> None:
    response = client.post("/jobs/train", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(error["loc"][: len(loc)] == loc for error in errors), errors
    assert all(word in str(errors) for word in words), errors
    assert broker.sent == [] and client.get("/jobs").json()["total"] == 0


def test_a_body_that_is_not_json_is_422(client: TestClient) -> None:
    response = client.post("/jobs/train", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422


def test_lr_auto_needs_a_succeeded_lr_finder_job_with_a_suggestion(client: TestClient, session: Session) -> None:
    def submit(job_id: str) -> dict:
        body = {**TRAIN_PARAMS, "optimizer": {"lr": "auto", "lr_finder_job": job_id}}
        return client.post("/jobs/train", json=body).json()

    train = put_job(session, kind="train", status="succeeded")
    running = put_job(session, kind="lr_finder", status="running")
    no_suggestion = put_job(session, kind="lr_finder", status="succeeded", result={"suggested_lr": None})
    cases = {
        "nope": "no job with id",
        train.id: "expected an lr_finder job",
        running.id: "'running'",
        no_suggestion.id: "gave no suggestion: its loss never fell clearly below where it started",
    }
    for job_id, words in cases.items():
        detail = submit(job_id)["detail"]
        assert detail[0]["loc"] == ["body", "optimizer", "lr_finder_job"] and words in detail[0]["msg"], detail
    assert "a lower start_lr, or give optimizer.lr" in submit(no_suggestion.id)["detail"][0]["msg"]

    finder = put_job(session, kind="lr_finder", status="succeeded", result={"suggested_lr": 0.05})
    job = submit(finder.id)
    assert job["status"] == "queued" and job["params"]["optimizer"]["lr"] == "auto"


def test_image_folder_must_exist_under_data_dir(
    client: TestClient, settings: Settings, image_folder_data_dir, configure
) -> None:
    def submit(path: str) -> tuple[int, dict]:
        response = client.post("/jobs/train", json={"dataset": {"name": "image_folder", "path": path}})
        return response.status_code, response.json()

    status, body = submit("missing")
    assert status == 422 and body["detail"][0]["loc"] == ["body", "dataset", "path"]
    assert "'missing'" in body["detail"][0]["msg"]
    status, body = submit("../etc")
    assert status == 422 and "without '..'" in str(body["detail"])
    (settings.DATA_DIR / "half" / "train").mkdir(parents=True)
    status, body = submit("half")
    assert status == 422 and "missing: test/" in body["detail"][0]["msg"]
    (settings.DATA_DIR).joinpath("escape").symlink_to(image_folder_data_dir / "shapes")
    status, body = submit("escape")
    assert status == 422 and "leaves DATA_DIR" in body["detail"][0]["msg"]

    configure(DATA_DIR=image_folder_data_dir)
    with make_client(FakeBroker()) as other:
        response = other.post("/jobs/train", json={"dataset": {"name": "image_folder", "path": "shapes"}})
    assert response.status_code == 202, response.text


def test_a_broker_that_is_down_fails_the_job_instead_of_losing_it(configure) -> None:
    configure(REDIS_URL=DEAD_REDIS_URL)
    with make_client() as client:  # the real Celery client, towards a closed port
        response = client.post("/jobs/train", json=TRAIN_PARAMS)
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "broker unreachable (REDIS_URL)" in detail and "127.0.0.1" not in detail
        jobs = client.get("/jobs").json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["id"] in detail
    assert jobs[0]["status"] == "failed" and jobs[0]["error"].startswith("could not enqueue: broker unreachable")
    assert jobs[0]["finished_at"] is not None


def test_the_fake_broker_down_gives_the_same_503(client: TestClient, broker: FakeBroker) -> None:
    broker.down = True
    response = client.post("/jobs/lr-finder", json=LR_FINDER_PARAMS)
    assert response.status_code == 503 and "broker unreachable" in response.json()["detail"]
    assert client.get("/jobs?status=failed").json()["total"] == 1


def test_list_filters_paginates_newest_first(client: TestClient, session: Session) -> None:
    made = [
        put_job(session, kind=kind, status=status)
        for kind, status in [
            ("train", "queued"),
            ("lr_finder", "running"),
            ("train", "succeeded"),
            ("train", "failed"),
            ("lr_finder", "succeeded"),
            ("train", "cancelled"),
        ]
    ]
    newest_first = [job.id for job in reversed(made)]
    page = client.get("/jobs").json()
    assert page["total"] == 6 and [job["id"] for job in page["jobs"]] == newest_first
    page = client.get("/jobs", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 6 and [job["id"] for job in page["jobs"]] == newest_first[1:3]
    page = client.get("/jobs", params={"kind": "train", "status": "succeeded"}).json()
    assert page["total"] == 1 and page["jobs"][0]["id"] == made[2].id
    assert client.get("/jobs", params={"kind": "lr_finder"}).json()["total"] == 2
    assert client.get("/jobs", params={"offset": 10}).json() == {"jobs": [], "total": 6}
    assert client.get("/jobs?status=&kind=&limit=50&offset=0").json()["total"] == 6  # the contract's example


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"status": "done"}, ["queued", "running", "succeeded", "failed", "cancelled"]),
        ({"kind": "predict"}, ["lr_finder", "train"]),
        ({"limit": 0}, ["greater than or equal to 1"]),
        ({"limit": 501}, ["less than or equal to 500"]),
        ({"offset": -1}, ["greater than or equal to 0"]),
    ],
)
def test_list_rejects_bad_filters_naming_allowed_values(client: TestClient, query: dict, words: list[str]) -> None:
    response = client.get("/jobs", params=query)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["query", next(iter(query))] and all(word in str(detail) for word in words)


def test_unknown_job_is_404_everywhere(client: TestClient) -> None:
    for method, path in [
        ("GET", "/jobs/nope"),
        ("POST", "/jobs/nope/cancel"),
        ("GET", "/jobs/nope/metrics"),
        ("GET", "/jobs/nope/artifacts"),
        ("GET", "/jobs/nope/artifacts/loss.png"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "nope" in response.json()["detail"]


def test_cancel_a_queued_job_at_once_and_revoke_its_task(client: TestClient, broker: FakeBroker) -> None:
    job_id = client.post("/jobs/train", json=TRAIN_PARAMS).json()["id"]
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "cancelled" and job["finished_at"] is not None and broker.revoked == [job_id]
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 409 and "'cancelled'" in response.json()["detail"]


def test_cancel_a_running_job_asks_it_to_stop(client: TestClient, session: Session, broker: FakeBroker) -> None:
    job = put_job(session, status="running")
    response = client.post(f"/jobs/{job.id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
    assert store.should_stop(session, job.id) and broker.revoked == []


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_an_ended_job_is_409(client: TestClient, session: Session, status: str) -> None:
    job = put_job(session, status=status)
    response = client.post(f"/jobs/{job.id}/cancel")
    assert response.status_code == 409 and status in response.json()["detail"]


def record(epoch: int, test_acc: float) -> dict:
    return {
        "epoch": epoch,
        "lr": 0.05,
        "train_loss": 1.0 / epoch,
        "train_acc": 0.5,
        "test_loss": 1.1 / epoch,
        "test_acc": test_acc,
        "seconds": 1.5,
        "images_per_second": 400.0,
    }


def test_train_metrics_while_running_and_once_finished(client: TestClient, session: Session) -> None:
    job = put_job(session, status="running")
    for epoch, acc in [(1, 0.4), (2, 0.6), (3, 0.55)]:
        store.add_epoch(session, job.id, record(epoch, acc))
    store.add_epoch(session, job.id, record(3, 0.5))  # a redelivered epoch replaces, never duplicates
    metrics = client.get(f"/jobs/{job.id}/metrics").json()
    assert metrics["job_id"] == job.id and metrics["status"] == "running"
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3] and metrics["epochs"][2]["test_acc"] == 0.5
    assert metrics["best"] == {"epoch": 2, "test_acc": 0.6, "val_acc": None} and metrics["per_class_accuracy"] is None
    assert metrics["selected_on"] == "test" and metrics["warnings"] == []
    assert metrics["last"] == {"epoch": 3, "test_acc": 0.5, "val_acc": None}  # beside the test-chosen best
    assert metrics["test_time_flip"] is False
    later = client.get(f"/jobs/{job.id}/metrics", params={"since_epoch": 2}).json()
    assert [r["epoch"] for r in later["epochs"]] == [3] and later["best"] == metrics["best"]
    assert client.get(f"/jobs/{job.id}/metrics", params={"since_epoch": -1}).status_code == 422

    per_class = {"T-shirt/top": 0.7, "Trouser": 0.9}
    result = {"best": {"epoch": 2, "test_acc": 0.6}, "per_class_accuracy": per_class, "stop_reason": "completed"}
    store.finish_job(session, job.id, status="succeeded", result=result)
    metrics = client.get(f"/jobs/{job.id}/metrics").json()
    assert metrics["status"] == "succeeded" and metrics["per_class_accuracy"] == per_class
    assert metrics["stop_reason"] == "completed"


def test_metrics_polls_share_one_store_read_for_metrics_cache_seconds(
    client: TestClient, session: Session, configure
) -> None:
    configure(METRICS_CACHE_SECONDS=60)
    job = put_job(session, status="running")
    store.add_epoch(session, job.id, record(1, 0.4))
    first = client.get(f"/jobs/{job.id}/metrics")
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    store.add_epoch(session, job.id, record(2, 0.6))  # the worker writes; polls within the minute reuse
    assert client.get(f"/jobs/{job.id}/metrics").json() == first.json()
    since = client.get(f"/jobs/{job.id}/metrics", params={"since_epoch": 1}).json()  # another key: read now
    assert [r["epoch"] for r in since["epochs"]] == [2]
    # a client that sees the next epoch start, or the job end, then gets metrics at least that fresh
    store.heartbeat(session, job.id, {"epoch": 3, "epochs": 5, "step": 1, "steps": 10, "fraction": 0.41})
    assert client.get(f"/jobs/{job.id}").json()["progress"]["epoch"] == 3
    assert [r["epoch"] for r in client.get(f"/jobs/{job.id}/metrics").json()["epochs"]] == [1, 2]
    store.finish_job(session, job.id, status="succeeded", result={"stop_reason": "completed"})
    assert [j["status"] for j in client.get("/jobs").json()["jobs"]] == ["succeeded"]
    assert client.get(f"/jobs/{job.id}/metrics").json()["status"] == "succeeded"

    queued = put_job(session, status="queued")
    assert client.get(f"/jobs/{queued.id}/metrics").json()["status"] == "queued"
    assert client.post(f"/jobs/{queued.id}/cancel").status_code == 202
    assert client.get(f"/jobs/{queued.id}/metrics").json()["status"] == "cancelled"  # this API's change: at once
    assert client.get("/jobs/nope/metrics").status_code == 404  # errors are never cached
    assert client.get("/jobs/nope/metrics").status_code == 404


def test_the_response_cache_expires_and_stays_bounded() -> None:
    from service.cache import ResponseCache

    now = [100.0]
    cache = ResponseCache(max_entries=2, clock=lambda: now[0])
    tag = ("running", 1)
    cache.put("a", 0, b"1", ttl=0.5, tag=tag)
    cache.put("a", 1, b"2", ttl=0, tag=tag)  # 0: not stored
    assert cache.get("a", 0) == b"1" and cache.get("a", 1) is None
    now[0] += 0.5
    assert cache.get("a", 0) is None
    cache.put("a", 0, b"1", ttl=5, tag=tag)
    cache.put("b", 0, b"2", ttl=5, tag=tag)
    cache.put("c", 0, b"3", ttl=5, tag=tag)  # the oldest goes
    assert len(cache) == 2 and cache.get("a", 0) is None and cache.get("c", 0) == b"3"
    cache.forget("c")
    assert cache.get("c", 0) is None and cache.get("b", 0) == b"2"
    cache.put("b", 1, b"4", ttl=5, tag=("running", 2))
    cache.seen("b", ("running", 2))  # the same state: kept
    assert cache.get("b", 1) == b"4"
    cache.seen("b", ("running", 3))  # a later one: dropped
    assert cache.get("b", 1) is None


def test_lr_finder_metrics_are_the_curve(client: TestClient, session: Session) -> None:
    curve = {
        "lrs": [1e-4, 1e-3, 1e-2],
        "losses": [2.3, 2.1, 2.6],
        "smoothed_losses": [2.3, 2.1, 2.6],
        "trend_losses": [2.3, 2.29, 2.3055],
        "suggested_lr": 1e-3,
        "suggestions": {"steepest": 1e-3, "valley": 5e-4, "minimum_div10": 1e-4},
        "diverged_at_lr": None,
        "stopped_at_lr": 1e-2,
        "stop_reason": "rise_stop",
    }
    running = put_job(session, kind="lr_finder", status="running")
    empty = client.get(f"/jobs/{running.id}/metrics").json()
    assert empty["lrs"] == [] and empty["suggested_lr"] is None and empty["status"] == "running"
    so_far = {key: curve[key][:2] for key in ("lrs", "losses", "smoothed_losses", "trend_losses")}
    assert store.heartbeat(session, running.id, {"step": 2, "steps": 3, "fraction": 0.67, "curve": so_far})
    live = client.get(f"/jobs/{running.id}/metrics").json()  # the curve so far, from the progress
    assert {key: live[key] for key in so_far} == so_far and live["suggested_lr"] is None
    progress = client.get(f"/jobs/{running.id}").json()["progress"]
    assert progress == {"step": 2, "steps": 3, "fraction": 0.67}, "the curve is served by /metrics only"
    job = put_job(session, kind="lr_finder", status="succeeded", result=curve)
    metrics = client.get(f"/jobs/{job.id}/metrics").json()
    assert metrics == {"job_id": job.id, "status": "succeeded", **curve, "warnings": []}
    stored_before_the_trend = {k: v for k, v in curve.items() if k not in ("trend_losses", "stopped_at_lr")}
    job = put_job(session, kind="lr_finder", status="succeeded", result=stored_before_the_trend)
    metrics = client.get(f"/jobs/{job.id}/metrics").json()
    assert metrics["trend_losses"] == curve["smoothed_losses"] and metrics["stopped_at_lr"] is None


def test_reads_do_not_write(configure, session: Session) -> None:
    """A dead worker's job stays `running` to readers until the reconciler's pass (here held by
    another API process) re-queues it: GET /jobs and GET /jobs/{id} change nothing."""
    configure(JOB_LEASE_SECONDS=30)
    assert store.take_lease(session, "reconciler", holder="another-api/1", seconds=600)
    stale = put_job(session, status="running")
    session.execute(update(Job).where(Job.id == stale.id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    session.commit()
    with make_client(FakeBroker()) as client:
        assert client.get(f"/jobs/{stale.id}").json()["status"] == "running"
        assert client.get("/jobs", params={"status": "running"}).json()["total"] == 1
        assert client.get(f"/jobs/{stale.id}/metrics").json()["status"] == "running"
    job = store.get_job(session, stale.id)
    assert job is not None and job.status == "running" and job.attempts == 1


def test_submissions_beyond_max_queued_jobs_get_429(configure, broker: FakeBroker) -> None:
    configure(MAX_QUEUED_JOBS=2)
    with make_client(broker) as client:
        first, second = (client.post("/jobs/train", json=TRAIN_PARAMS) for _ in range(2))
        assert first.status_code == second.status_code == 202
        refused = client.post("/jobs/lr-finder", json=LR_FINDER_PARAMS)
        assert refused.status_code == 429 and "MAX_QUEUED_JOBS=2" in refused.json()["detail"]
        assert len(broker.sent) == 2 and client.get("/jobs").json()["total"] == 2  # nothing recorded
        assert client.post(f"/jobs/{first.json()['id']}/cancel").status_code == 202
        assert client.post("/jobs/lr-finder", json=LR_FINDER_PARAMS).status_code == 202


def test_jobs_api_on_postgresql(configure, postgres_url: str) -> None:
    configure(DATABASE_URL=postgres_url)
    broker = FakeBroker()
    with make_client(broker) as client:
        job = client.post("/jobs/train", json=TRAIN_PARAMS).json()
        parse_time(job["created_at"])
        assert client.get("/jobs").json()["jobs"] == [job]
        assert client.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        assert client.post(f"/jobs/{job['id']}/cancel").status_code == 409


def test_metrics_carry_an_etag_and_never_go_back_across_api_processes(configure, session: Session) -> None:
    """Another API process answered the client with epoch 2; this one still caches epoch 1: the
    client's If-None-Match makes it read the store instead of going back."""
    from service.cache import metrics_cache

    configure(METRICS_CACHE_SECONDS=60)
    job = put_job(session, status="running")
    claim = store.Claim.of(store.get_job(session, job.id))
    store.add_epoch(session, job.id, record(1, 0.4), claim=claim)
    with make_client(FakeBroker()) as client:
        first = client.get(f"/jobs/{job.id}/metrics")  # cached here for a minute
        store.add_epoch(session, job.id, record(2, 0.6), claim=claim)
        assert client.get(f"/jobs/{job.id}/metrics").json()["epochs"] == first.json()["epochs"]  # the cache
        fresh = client.get(f"/jobs/{job.id}/metrics", headers={"If-None-Match": '"from-another-process"'})
        assert [e["epoch"] for e in fresh.json()["epochs"]] == [1, 2] and fresh.headers["ETag"] != first.headers["ETag"]
        same = client.get(f"/jobs/{job.id}/metrics", headers={"If-None-Match": fresh.headers["ETag"]})
        assert same.status_code == 304 and same.content == b"" and same.headers["ETag"] == fresh.headers["ETag"]
    metrics_cache.forget(job.id)
