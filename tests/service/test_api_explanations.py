"""GET /jobs/{id}/explanations: a training job's probe images with their GradCAM maps, predictions and
confidences at one epoch (the latest by default), served from the probes/ folder the trainer writes
(ml.probe_files' layout, written here with numpy), 422 naming the recorded epochs, 404 saying why."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from api_support import put_job
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from ml.probe_files import FOLDER, SET_FILE, epoch_file
from service.routers.explanations import jet

CLASSES = ["cat", "dog", "bird"]
INDICES = [4, 0, 9]
LABELS = [0, 1, 2]
SIDE = 6  # px of the images and maps


def images() -> np.ndarray:
    return (np.arange(3 * SIDE * SIDE).reshape(3, SIDE, SIDE, 1) * 2).astype(np.uint8)


def maps(epoch: int) -> np.ndarray:
    return (np.arange(3 * SIDE * SIDE).reshape(3, SIDE, SIDE) * epoch % 256).astype(np.uint8)


def write_probes(settings: Settings, job_id: str, epochs: list[int]) -> None:
    folder = settings.ARTIFACTS_DIR / job_id / FOLDER
    folder.mkdir(parents=True)
    np.savez_compressed(
        folder / SET_FILE,
        indices=np.array(INDICES),
        images=images(),
        labels=np.array(LABELS),
        classes=np.array(CLASSES),
    )
    for epoch in epochs:
        np.savez_compressed(
            epoch_file(folder, epoch),
            maps=maps(epoch),
            predicted=np.array([epoch % 3, 1, 2]),
            confidence=np.array([0.5 + epoch / 100, 0.9, 0.123456], dtype=np.float32),
            true_probability=np.array([0.25, 0.9, 0.123456], dtype=np.float32),
        )


def decoded(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))))


@pytest.fixture
def running(settings: Settings, session: Session) -> str:
    job = put_job(session, status="running", params=None)
    write_probes(settings, job.id, [1, 2, 3])
    return str(job.id)


def test_the_latest_epoch_by_default_with_images_maps_and_predictions(client: TestClient, running: str) -> None:
    response = client.get(f"/jobs/{running}/explanations")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["epoch"] == 3 and body["epochs"] == [1, 2, 3] and body["method"] == "gradcam"
    assert [p["index"] for p in body["probes"]] == INDICES
    assert [p["true_class"] for p in body["probes"]] == CLASSES
    assert [p["pred_class"] for p in body["probes"]] == ["cat", "dog", "bird"]  # 3 % 3 = 0
    assert [p["confidence"] for p in body["probes"]] == [0.53, 0.9, 0.1235]
    assert [p["true_probability"] for p in body["probes"]] == [0.25, 0.9, 0.1235]
    for i, probe in enumerate(body["probes"]):
        assert np.array_equal(decoded(probe["image"]), images()[i, :, :, 0])
        assert np.array_equal(decoded(probe["map"]), maps(3)[i])  # lossless: the stored map itself
        assert np.array_equal(decoded(probe["heatmap"]), jet(maps(3)[i]))


def test_an_epoch_chosen_and_the_colours_of_the_heat_map(client: TestClient, running: str) -> None:
    body = client.get(f"/jobs/{running}/explanations?epoch=1").json()
    assert body["epoch"] == 1 and body["probes"][0]["pred_class"] == "dog"
    assert np.array_equal(decoded(body["probes"][1]["map"]), maps(1)[1])
    low, middle, high = jet(np.array([0, 128, 255], dtype=np.uint8)).tolist()  # OpenCV's JET, in RGB
    assert low[2] > 100 and low[0] == low[1] == 0  # dark blue
    assert high[0] > 100 and high[1] == high[2] == 0  # dark red
    assert middle[1] == 255 and max(middle[0], middle[2]) < 160  # green in the middle


@pytest.mark.parametrize("epoch", ["4", "0", "501", "x", "1.5"])
def test_an_epoch_not_recorded_is_422_naming_the_parameter(client: TestClient, running: str, epoch: str) -> None:
    response = client.get(f"/jobs/{running}/explanations?epoch={epoch}")
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "epoch"]
    if epoch == "4":
        assert "recorded epochs are 1-3" in error["msg"]


def test_gaps_in_the_recorded_epochs_are_named(client: TestClient, settings: Settings, session: Session) -> None:
    job = put_job(session, status="cancelled")
    write_probes(settings, job.id, [1, 2, 4])
    (error,) = client.get(f"/jobs/{job.id}/explanations?epoch=3").json()["detail"]
    assert "recorded epochs are 1-2, 4" in error["msg"]


def test_404_without_a_job_or_without_probes(client: TestClient, settings: Settings, session: Session) -> None:
    assert client.get("/jobs/" + "0" * 32 + "/explanations").status_code == 404
    queued = put_job(session, status="queued")
    response = client.get(f"/jobs/{queued.id}/explanations")
    assert response.status_code == 404 and "no epoch has finished" in response.json()["detail"]
    finder = put_job(session, kind="lr_finder", status="succeeded")
    response = client.get(f"/jobs/{finder.id}/explanations")
    assert response.status_code == 404 and "LR-finder" in response.json()["detail"]
    half = put_job(session, status="running")
    (settings.ARTIFACTS_DIR / half.id / FOLDER).mkdir(parents=True)
    np.savez_compressed(epoch_file(settings.ARTIFACTS_DIR / half.id / FOLDER, 1), maps=maps(1))  # no set.npz yet
    assert client.get(f"/jobs/{half.id}/explanations").status_code == 404


def test_the_metrics_serve_the_drift_and_the_faithfulness(client: TestClient, session: Session) -> None:
    faithfulness = {
        "measure": "ROADCombined",
        "gradcam": 0.12,
        "gradcam++": 0.08,
        "percentiles": [20, 40, 60, 80],
        "target": "predicted class (softmax probability)",
        "probes": 20,
    }
    job = put_job(session, status="running")
    record = {"lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5, "seconds": 1.0}
    for epoch, drift in ((1, None), (2, 0.75)):
        store.add_epoch(session, job.id, record | {"epoch": epoch, "attention_drift": drift, "images_per_second": 9.0})
    store.finish_job(session, job.id, status="succeeded", result={"faithfulness": faithfulness})
    body = client.get(f"/jobs/{job.id}/metrics").json()
    assert [e["attention_drift"] for e in body["epochs"]] == [None, 0.75]
    assert body["faithfulness"] == faithfulness
