"""A job's artifacts and the checkpoints: listing, downloading, and nothing outside ARTIFACTS_DIR."""

from __future__ import annotations

import pytest
from api_support import TRAIN_PARAMS, png_bytes, put_job
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.store import ArtifactFile


@pytest.fixture
def job_with_artifacts(settings: Settings, session: Session) -> str:
    job = put_job(session, status="succeeded")
    folder = settings.ARTIFACTS_DIR / job.id
    folder.mkdir(parents=True)
    (folder / "accuracy.png").write_bytes(png_bytes())
    (folder / "metrics.json").write_text('{"epochs": []}')
    (settings.ARTIFACTS_DIR / "secret.txt").write_text("not an artifact")
    store.add_artifacts(
        session,
        job.id,
        [
            ArtifactFile("accuracy.png", "image/png", f"{job.id}/accuracy.png"),
            ArtifactFile("metrics.json", "application/json", f"{job.id}/metrics.json"),
            ArtifactFile("gone.png", "image/png", f"{job.id}/gone.png"),
            ArtifactFile("outside.txt", "text/plain", "../outside.txt"),
        ],
    )
    (settings.ARTIFACTS_DIR.parent / "outside.txt").write_text("outside ARTIFACTS_DIR")
    return job.id


def test_list_and_download_artifacts(client: TestClient, job_with_artifacts: str) -> None:
    job_id = job_with_artifacts
    listed = client.get(f"/jobs/{job_id}/artifacts").json()["artifacts"]
    assert {a["name"]: (a["media_type"], a["url"]) for a in listed}["accuracy.png"] == (
        "image/png",
        f"/jobs/{job_id}/artifacts/accuracy.png",
    )
    png = client.get(f"/jobs/{job_id}/artifacts/accuracy.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == png_bytes()
    metrics = client.get(f"/jobs/{job_id}/artifacts/metrics.json")
    assert metrics.headers["content-type"].startswith("application/json") and metrics.json() == {"epochs": []}


def test_a_job_without_artifacts_lists_none(client: TestClient, session: Session) -> None:
    job = put_job(session, status="queued")
    assert client.get(f"/jobs/{job.id}/artifacts").json() == {"artifacts": []}


@pytest.mark.parametrize(
    "name",
    [
        "secret.txt",  # on disk but not registered
        "..%2Fsecret.txt",
        "..%2F..%2Fsecret.txt",
        "%2E%2E%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        "..%5Csecret.txt",
        "%252e%252e%252fsecret.txt",
        "...",
        ".hidden",
        "gone.png",  # registered, missing on disk
        "outside.txt",  # registered, but resolves outside ARTIFACTS_DIR
    ],
)
def test_names_that_are_not_plain_registered_files_are_404(
    client: TestClient, job_with_artifacts: str, name: str
) -> None:
    response = client.get(f"/jobs/{job_with_artifacts}/artifacts/{name}")
    assert response.status_code == 404, response.text
    assert "ARTIFACTS_DIR" not in response.text and "not an artifact" not in response.text


def test_dot_dot_names_never_reach_a_file(client: TestClient, job_with_artifacts: str) -> None:
    from service.routers.artifacts import _plain_name

    assert not any(_plain_name(name) for name in ("..", ".", "../x", "a/b", "/etc/passwd", "a\\b", "", ".env"))
    assert _plain_name("accuracy.png") and _plain_name("gradcam_misclassified_true.png")


def test_checkpoints_list_and_get(client: TestClient, session: Session) -> None:
    assert client.get("/checkpoints").json() == {"checkpoints": [], "total": 0}
    result = {"best": {"epoch": 2, "test_acc": 0.5}, "last": {"epoch": 3, "test_acc": 0.45}, "selected_on": "test"}
    job = put_job(session, status="succeeded", params=TRAIN_PARAMS | {"test_time_flip": True}, result=result)
    classes = ["cat", "dog"]
    first = store.add_checkpoint(
        session,
        job_id=job.id,
        model={"name": "resnet18", "width": 8},
        dataset="cifar10",
        classes=classes,
        test_acc=0.5,
        epoch=2,
        path=f"{job.id}/checkpoints/best",
    )
    second = store.add_checkpoint(
        session,
        job_id=put_job(session, status="succeeded").id,
        model={"name": "custom_resnet", "width": 4},
        dataset="fashion_mnist",
        classes=classes,
        test_acc=None,
        epoch=1,
        path="x",
    )
    listed = client.get("/checkpoints").json()["checkpoints"]
    assert [c["id"] for c in listed] == [second.id, first.id]  # newest first
    got = client.get(f"/checkpoints/{first.id}").json()
    assert got == {
        "id": first.id,
        "job_id": job.id,
        "model": {"name": "resnet18", "width": 8},
        "dataset": "cifar10",
        "classes": classes,
        "test_acc": 0.5,
        "epoch": 2,
        "selected_on": "test",  # the test set chose epoch 2: 0.5 is optimistic, the last epoch says 0.45
        "last_epoch": 3,
        "last_test_acc": 0.45,
        "test_time_flip": True,
        "temperature": None,  # its job reported no calibration
        "created_at": got["created_at"],
    }
    assert got["created_at"].endswith(("Z", "+00:00"))
    response = client.get("/checkpoints/nope")
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_checkpoints_page_like_jobs(client: TestClient, session: Session) -> None:
    ids = [
        store.add_checkpoint(
            session,
            job_id=put_job(session, status="succeeded").id,
            model={"name": "resnet18", "width": 8},
            dataset="cifar10",
            classes=["cat", "dog"],
            test_acc=0.5,
            epoch=i,
            path=f"x{i}",
        ).id
        for i in range(5)
    ][::-1]
    page = client.get("/checkpoints", params={"limit": 2, "offset": 1}).json()
    assert [c["id"] for c in page["checkpoints"]] == ids[1:3] and page["total"] == 5
    assert [c["id"] for c in client.get("/checkpoints").json()["checkpoints"]] == ids  # default: the first 50
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        response = client.get("/checkpoints", params=bad)
        assert response.status_code == 422 and next(iter(bad)) in str(response.json()["detail"])
