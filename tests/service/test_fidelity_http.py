"""What a user asked for is what trains and what is reported, over HTTP: the API validates and
stores the job, the real task runs it in-process on tiny real Fashion-MNIST, the API serves it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.config import Settings
from worker.tasks import run_job

TINY = {"dataset": {"name": "fashion_mnist", "train_subset": 100, "test_subset": 50}, "model": {"width": 2},
        "batch_size": 32, "epochs": 1, "gradcam_misclassified": 0}  # fmt: skip
SHIFT_SCALE_ROTATE = {"name": "ShiftScaleRotate", "shift_limit": 0.0625, "scale_limit": 0.1, "rotate_limit": 15}
ADVICE = ("augmentation[0] ShiftScaleRotate: ShiftScaleRotate is a special case of Affine transform. "
          "Please use Affine transform instead.")  # fmt: skip


def run(client: TestClient, kind: str, body: dict) -> dict:
    response = client.post(f"/jobs/{'train' if kind == 'train' else 'lr-finder'}", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert run_job(job["id"], kind, job["params"]) == "succeeded"
    return job


def test_a_deprecated_transform_trains_and_its_warning_is_served(client: TestClient, settings: Settings) -> None:
    job = run(client, "train", {**TINY, "augmentation": [SHIFT_SCALE_ROTATE, {"name": "HorizontalFlip"}]})
    metrics = client.get(f"/jobs/{job['id']}/metrics").json()
    assert metrics["status"] == "succeeded" and metrics["warnings"] == [ADVICE]
    assert client.get(f"/jobs/{job['id']}/metrics").json()["epochs"][0]["epoch"] == 1


def test_an_lr_finder_job_reports_the_warning_too(client: TestClient, settings: Settings) -> None:
    body = {k: TINY[k] for k in ("dataset", "model", "batch_size")}
    body |= {"num_iter": 5, "augmentation": [SHIFT_SCALE_ROTATE]}
    job = run(client, "lr_finder", body)
    assert client.get(f"/jobs/{job['id']}/metrics").json()["warnings"] == [ADVICE]


def test_a_preset_job_has_no_warnings(client: TestClient, settings: Settings) -> None:
    job = run(client, "train", {**TINY, "augmentation": "none"})
    assert client.get(f"/jobs/{job['id']}/metrics").json()["warnings"] == []
