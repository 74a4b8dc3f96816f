"""The product end to end over HTTP: a real API, a real Celery worker, Redis and PostgreSQL, tiny
real Fashion-MNIST. LR range test, training (metrics read while it runs), artifacts, checkpoints,
prediction with GradCAM, "auto" learning rate, cancellation, a worker killed mid-job or stopped with
SIGTERM (the job resumes on the next worker) and an API restart."""

from __future__ import annotations

import base64
import http.client
import io
import signal
import time
from typing import Any

import pytest
from e2e_support import LEASE_SECONDS, Stack
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FASHION = {"name": "fashion_mnist", "train_subset": 600, "test_subset": 200}
LR_FINDER = {
    "dataset": {"name": "fashion_mnist", "train_subset": 500},
    "model": {"name": "resnet18", "width": 4},
    "batch_size": 32,
    "num_iter": 30,
    "start_lr": 1e-4,
    "end_lr": 10,
    "augmentation": "none",  # so that its loss falls clearly in 30 steps (7%), else nothing is suggested
    "smooth_f": 0.1,
}
TRAIN = {
    "dataset": FASHION,
    "model": {"name": "resnet18", "width": 4},
    "epochs": 2,
    "batch_size": 64,
    "gradcam_misclassified": 4,
}
LONG = {
    "dataset": {**FASHION, "train_subset": 200, "test_subset": 100},
    "model": {"name": "resnet18", "width": 4},
    "epochs": 200,
    "batch_size": 32,
    "gradcam_misclassified": 0,
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
}


@pytest.fixture(scope="module")
def lr_finder_job(stack: Stack) -> dict[str, Any]:
    job = stack.wait(stack.submit("lr-finder", LR_FINDER))
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture(scope="module")
def train_run(stack: Stack) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tiny training run, with the metrics seen while it ran."""
    job_id = stack.submit("train", TRAIN)
    seen = []
    deadline = time.monotonic() + 300
    while (metrics := stack.get(f"/jobs/{job_id}/metrics").json())["status"] not in ("succeeded", "failed"):
        seen.append(metrics | {"progress": stack.get(f"/jobs/{job_id}").json()["progress"]})
        stack.check_alive()
        assert time.monotonic() < deadline, metrics
        time.sleep(0.2)
    job = stack.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    return job, seen


def test_lr_finder_job_gives_a_curve_and_a_plot(stack: Stack, lr_finder_job: dict[str, Any]) -> None:
    job_id = lr_finder_job["id"]
    assert lr_finder_job["started_at"] and lr_finder_job["finished_at"] and lr_finder_job["error"] is None
    metrics = stack.get(f"/jobs/{job_id}/metrics").json()
    assert metrics["status"] == "succeeded" and 2 <= len(metrics["lrs"]) <= 30
    assert len(metrics["losses"]) == len(metrics["smoothed_losses"]) == len(metrics["lrs"])
    assert metrics["lrs"] == sorted(metrics["lrs"]) and 1e-4 <= metrics["suggested_lr"] <= 10
    assert set(metrics["suggestions"]) == {"steepest", "valley", "minimum_div10"}
    names = {a["name"] for a in stack.get(f"/jobs/{job_id}/artifacts").json()["artifacts"]}
    assert "lr_finder.png" in names
    assert stack.get(f"/jobs/{job_id}/artifacts/lr_finder.png").content.startswith(b"\x89PNG\r\n\x1a\n")


def test_train_job_reports_while_running_and_leaves_everything(stack: Stack, train_run) -> None:
    job, seen = train_run
    assert any(m["status"] == "running" for m in seen), "never saw the job running"
    fractions = [m["progress"].get("fraction") for m in seen if m["progress"]]
    assert fractions and all(0 <= f <= 1 for f in fractions) and fractions == sorted(fractions)
    for earlier, later in zip(seen, seen[1:]):  # epochs only ever grow
        assert later["epochs"][: len(earlier["epochs"])] == earlier["epochs"]

    metrics = stack.get(f"/jobs/{job['id']}/metrics").json()
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert {"lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "images_per_second"} <= set(
        metrics["epochs"][0]
    )
    assert metrics["best"]["epoch"] in (1, 2) and len(metrics["per_class_accuracy"]) == 10
    later = stack.get(f"/jobs/{job['id']}/metrics", params={"since_epoch": 1}).json()
    assert [e["epoch"] for e in later["epochs"]] == [2]
    assert job["progress"]["fraction"] == 1.0

    artifacts = stack.get(f"/jobs/{job['id']}/artifacts").json()["artifacts"]
    assert {a["name"] for a in artifacts} >= TRAIN_ARTIFACTS
    for artifact in artifacts:
        response = stack.get(artifact["url"])
        assert response.status_code == 200 and response.headers["content-type"].startswith(artifact["media_type"])
        if artifact["media_type"] == "image/png":
            assert response.content.startswith(b"\x89PNG\r\n\x1a\n"), artifact["name"]

    checkpoint = stack.get(f"/checkpoints/{job['checkpoint_id']}").json()
    assert checkpoint["job_id"] == job["id"] and checkpoint["dataset"] == "fashion_mnist"
    assert checkpoint["epoch"] == metrics["best"]["epoch"] and len(checkpoint["classes"]) == 10
    assert checkpoint["id"] in {c["id"] for c in stack.get("/checkpoints").json()["checkpoints"]}


def test_artifact_paths_cannot_leave_the_job(stack: Stack, train_run) -> None:
    job_id = train_run[0]["id"]
    host, port = stack.url.removeprefix("http://").split(":")
    for path in (
        f"/jobs/{job_id}/artifacts/../../../etc/passwd",
        f"/jobs/{job_id}/artifacts/..%2F..%2Fapp.db",
        f"/jobs/{job_id}/artifacts/%2Fetc%2Fpasswd",
        f"/jobs/{job_id}/artifacts/checkpoints",
    ):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)  # sends the path as written
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status == 404 and b"root:" not in body, path


def test_predict_with_gradcam_on_the_trained_checkpoint(stack: Stack, train_run) -> None:
    job = train_run[0]
    image = Image.new("L", (28, 28), 0)
    image.paste(255, (8, 4, 20, 24))  # a bright bar: something trouser-like
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    params = {"checkpoint": job["checkpoint_id"], "gradcam": "true", "topk": 3}
    response = stack.post("/predict", params=params, files={"file": ("bar.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["filename"] == "bar.png" and len(prediction["topk"]) == 3
    overlay = base64.b64decode(prediction["gradcam"]["overlay_png_base64"])
    assert Image.open(io.BytesIO(overlay)).format == "PNG"
    latest = stack.post("/predict", params={"checkpoint": "latest"}, files={"file": ("x.png", buffer.getvalue())})
    assert latest.status_code == 200 and latest.json()["predictions"][0]["gradcam"] is None
    assert stack.post("/predict", files={"file": ("x.txt", b"not an image")}).status_code == 415


def test_train_with_the_lr_finders_suggestion(stack: Stack, lr_finder_job: dict[str, Any]) -> None:
    spec = {
        **TRAIN,
        "dataset": {**FASHION, "train_subset": 200, "test_subset": 100},
        "epochs": 1,
        "gradcam_misclassified": 0,
        "optimizer": {"lr": "auto", "lr_finder_job": lr_finder_job["id"]},
    }
    job = stack.wait(stack.submit("train", spec))
    assert job["status"] == "succeeded", job
    suggested = stack.get(f"/jobs/{lr_finder_job['id']}/metrics").json()["suggested_lr"]
    epochs = stack.get(f"/jobs/{job['id']}/metrics").json()["epochs"]
    assert epochs[0]["lr"] == pytest.approx(suggested)


def test_cancel_stops_a_long_job(stack: Stack) -> None:
    job_id = stack.submit("train", LONG)
    deadline = time.monotonic() + 180
    while not stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    response = stack.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = stack.wait(job_id, timeout=120)
    assert job["status"] == "cancelled" and job["error"] is None and job["checkpoint_id"]
    assert 1 <= len(stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]) < LONG["epochs"]
    assert stack.post(f"/jobs/{job_id}/cancel").status_code == 409


RESUMABLE = {**LONG, "epochs": 4}


def test_a_killed_worker_s_job_is_requeued_and_resumes_on_the_next_worker(stack: Stack) -> None:
    job_id = stack.submit("train", RESUMABLE)
    deadline = time.monotonic() + 180
    while not stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]:
        stack.check_alive()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stack.kill_worker()  # kill -9 in the middle of epoch 2 or so
    before = stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]
    assert 1 <= len(before) < RESUMABLE["epochs"], "the job finished before the kill"
    stack.start_worker()
    job = stack.wait(job_id, timeout=LEASE_SECONDS * 4 + 180)
    assert job["status"] == "succeeded" and job["error"] is None and job["attempts"] == 2, job
    epochs = stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, RESUMABLE["epochs"] + 1))  # each once, none lost
    assert epochs[: len(before)] == before  # finished epochs were resumed from, not trained again
    assert stack.get("/jobs", params={"status": "running"}).json()["total"] == 0
    names = {a["name"] for a in stack.get(f"/jobs/{job_id}/artifacts").json()["artifacts"]}
    assert {"accuracy.png", "loss.png", "lr.png"} <= names and job["checkpoint_id"]


GRACEFUL = {**LONG, "epochs": 8}


def test_a_worker_stopped_with_sigterm_requeues_its_job_and_the_next_worker_resumes_it(stack: Stack) -> None:
    job_id = stack.submit("train", GRACEFUL)
    deadline = time.monotonic() + 180
    while not stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]:
        stack.check_alive()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert stack.stop_worker(signal.SIGTERM) == 0  # a warm shutdown: within a few batches, not at the job's end
    job = stack.get(f"/jobs/{job_id}").json()  # not failed, and no attempt used:
    assert job["status"] == "queued" and job["error"] is None and job["attempts"] == 0, job
    before = stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]
    assert 1 <= len(before) < GRACEFUL["epochs"], "the job finished before the SIGTERM"
    stack.start_worker()
    job = stack.wait(job_id, timeout=240)
    assert job["status"] == "succeeded" and job["error"] is None and job["attempts"] == 1, job
    epochs = stack.get(f"/jobs/{job_id}/metrics").json()["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, GRACEFUL["epochs"] + 1))  # each once, none lost
    assert epochs[: len(before)] == before  # resumed from its last finished epoch, not trained again
    # and it learned exactly what an uninterrupted run of the same spec and seed learns (on one CPU machine)
    again = stack.wait(stack.submit("train", GRACEFUL), timeout=240)
    assert again["status"] == "succeeded", again
    uninterrupted = stack.get(f"/jobs/{again['id']}/metrics").json()["epochs"]
    learned = ("lr", "train_loss", "train_acc", "test_loss", "test_acc")
    assert [[e[k] for k in learned] for e in epochs] == [[e[k] for k in learned] for e in uninterrupted]
    assert job["checkpoint_id"] and stack.get("/jobs", params={"status": "running"}).json()["total"] == 0


def test_after_an_api_restart_everything_is_still_served(stack: Stack, train_run) -> None:
    job = train_run[0]
    before = {
        path: stack.get(path).json()
        for path in (
            f"/jobs/{job['id']}",
            f"/jobs/{job['id']}/metrics",
            f"/jobs/{job['id']}/artifacts",
            f"/checkpoints/{job['checkpoint_id']}",
        )
    }
    png = stack.get(f"/jobs/{job['id']}/artifacts/accuracy.png").content
    stack.restart_api()
    for path, body in before.items():
        assert stack.get(path).json() == body, path
    assert stack.get(f"/jobs/{job['id']}/artifacts/accuracy.png").content == png
    image = io.BytesIO()
    Image.new("L", (28, 28), 128).save(image, format="PNG")
    response = stack.post(
        "/predict",
        params={"checkpoint": job["checkpoint_id"]},
        files={"file": ("x.png", image.getvalue(), "image/png")},
    )
    assert response.status_code == 200 and response.json()["checkpoint_id"] == job["checkpoint_id"]
