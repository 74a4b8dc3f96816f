"""When not to trust a model, over HTTP: /predict?calibrated=true divides the logits by the checkpoint's
fitted temperature (and says so), or is a 422 saying why there is none; a finished job's metrics and its
checkpoint carry the calibration; /jobs/{id}/label-issues pages through label_issues.json, with the
overlays of the first issues, and is a 404 saying why for a job without them."""

from __future__ import annotations

import numpy as np
import pytest
from api_support import TestClient, png_bytes, put_job
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from ml import label_issues
from ml.label_issues import LabelIssues
from worker.outputs import register_artifacts

CLASSES = ["cat", "dog", "frog"]


def calibration_result(value: float, applied: bool) -> dict:
    bins = [
        {"lower": i / 15, "upper": (i + 1) / 15, "count": 0, "confidence": None, "accuracy": None} for i in range(15)
    ]
    reliability = {"set": "test", "ece": 0.12, "bins": bins}
    return {
        **reliability,
        "validation": reliability | {"set": "validation"} if applied else None,
        "temperature": {"value": value, "applied": applied, "fitted_on": "validation" if applied else "test"},
        "calibrated": reliability | {"ece": 0.03},
    }


def checkpoint(settings: Settings, session: Session, temperature: dict | None) -> str:
    """A width-4 ResNet18 checkpoint whose manifest (and job result) hold `temperature`."""
    from ml.checkpoints import save_checkpoint
    from ml.models import build_model
    from ml.specs import ModelSpec

    spec = {"name": "resnet18", "width": 4}
    model = build_model(ModelSpec(**spec), in_channels=3, num_classes=3)
    manifest = {
        "model": spec,
        "in_channels": 3,
        "num_classes": 3,
        "image_size": 32,
        "classes": CLASSES,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    } | ({"temperature": temperature} if temperature else {})
    result = {"calibration": calibration_result(temperature["value"], temperature["applied"])} if temperature else None
    job = put_job(session, status="succeeded", result=result)
    relative = f"{job.id}/checkpoints/best"
    save_checkpoint(settings.ARTIFACTS_DIR / relative, model=model, manifest=manifest)
    row = store.add_checkpoint(
        session, job_id=job.id, model=spec, dataset="cifar10", classes=CLASSES, test_acc=0.4, epoch=1, path=relative
    )
    return str(row.id)


def predict(client: TestClient, checkpoint_id: str, **params) -> dict:
    files = [("files", (f"{i}.png", png_bytes(color=(60 * i, 200 - 50 * i, 90)), "image/png")) for i in range(3)]
    response = client.post("/predict", params={"checkpoint": checkpoint_id, "topk": 3, **params}, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def probabilities(body: dict) -> np.ndarray:
    return np.array(
        [[dict((t["label"], t["probability"]) for t in p["topk"])[c] for c in CLASSES] for p in body["predictions"]]
    )


def test_calibrated_predictions_divide_the_logits_by_the_temperature(
    client: TestClient, settings: Settings, session: Session
) -> None:
    checkpoint_id = checkpoint(settings, session, {"value": 2.5, "applied": True, "fitted_on": "validation"})
    plain, calibrated = (
        predict(client, checkpoint_id),
        predict(client, checkpoint_id, calibrated="true", gradcam="true"),
    )
    assert plain["calibrated"] is False and plain["temperature"] is None
    assert calibrated["calibrated"] is True and calibrated["temperature"] == 2.5
    p, q = probabilities(plain), probabilities(calibrated)
    expected = p ** (1 / 2.5) / (p ** (1 / 2.5)).sum(axis=1, keepdims=True)  # softmax(z / T) from softmax(z)
    assert np.allclose(q, expected, atol=1e-5)
    assert [r["label"] for r in plain["predictions"]] == [r["label"] for r in calibrated["predictions"]]
    assert all(r["gradcam"] is not None for r in calibrated["predictions"])
    assert client.get(f"/checkpoints/{checkpoint_id}").json()["temperature"] == 2.5


@pytest.mark.parametrize(
    ("temperature", "why"),
    [
        ({"value": 1.8, "applied": False, "fitted_on": "test"}, "no validation split"),
        (None, "before temperatures were fitted"),
    ],
)
def test_calibrated_without_a_fitted_temperature_is_422_saying_why(
    client: TestClient, settings: Settings, session: Session, temperature: dict | None, why: str
) -> None:
    checkpoint_id = checkpoint(settings, session, temperature)
    response = client.post(
        "/predict",
        params={"checkpoint": checkpoint_id, "calibrated": "true"},
        files={"file": ("a.png", png_bytes(), "image/png")},
    )
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["query", "calibrated"] and "no fitted temperature" in error["msg"] and why in error["msg"]
    assert client.get(f"/checkpoints/{checkpoint_id}").json()["temperature"] is None
    assert predict(client, checkpoint_id)["calibrated"] is False  # uncalibrated still answers
    bad = client.post("/predict", params={"calibrated": "maybe"}, files={"file": ("a.png", png_bytes(), "image/png")})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "calibrated"]


def test_a_finished_jobs_metrics_hold_its_calibration(client: TestClient, session: Session) -> None:
    job = put_job(session, status="succeeded", result={"calibration": calibration_result(1.4, True)})
    body = client.get(f"/jobs/{job.id}/metrics").json()
    assert body["calibration"]["ece"] == 0.12 and len(body["calibration"]["bins"]) == 15
    assert body["calibration"]["temperature"] == {"value": 1.4, "applied": True, "fitted_on": "validation"}
    assert client.get(f"/jobs/{put_job(session, status='running').id}/metrics").json()["calibration"] is None


N_ISSUES, OVERLAID = 120, 50


def issues_table() -> LabelIssues:
    index = np.arange(N_ISSUES, dtype=np.int64) * 3  # every third of 400 images
    given = index % 3
    return LabelIssues(
        set_name="validation",
        classes=CLASSES,
        scored=400,
        index=index,
        given=given,
        predicted=(given + 1) % 3,
        score=np.linspace(0.001, 0.3, N_ISSUES),
        given_probability=np.linspace(0.001, 0.3, N_ISSUES),
        overlays=OVERLAID,
    )


@pytest.fixture
def issues_job(settings: Settings, session: Session) -> str:
    job = put_job(session, status="succeeded")
    folder = settings.ARTIFACTS_DIR / job.id
    overlays = folder / label_issues.OVERLAY_FOLDER
    overlays.mkdir(parents=True)
    table = issues_table()
    label_issues.save(table, folder / label_issues.FILE_NAME)
    for i in table.index[:OVERLAID]:
        for target in label_issues.TARGETS:
            (overlays / label_issues.overlay_name(int(i), target)).write_bytes(png_bytes(color=(int(i) % 255, 0, 0)))
    assert register_artifacts(session, job.id, out_dir=folder, root=settings.ARTIFACTS_DIR.resolve(), extra=[]) == 1
    return str(job.id)


def test_label_issues_page_in_rank_order_with_overlay_urls(client: TestClient, issues_job: str) -> None:
    body = client.get(f"/jobs/{issues_job}/label-issues").json()
    assert body["total"] == N_ISSUES and body["set"] == "validation" and body["scored"] == 400
    assert len(body["issues"]) == 50
    assert body["issues"][0] == {
        "rank": 1,
        "index": 0,
        "given_class": "cat",
        "predicted_class": "dog",
        "score": 0.001,
        "given_probability": 0.001,
        "given_overlay_url": f"/jobs/{issues_job}/label-issues/0/given.png",
        "predicted_overlay_url": f"/jobs/{issues_job}/label-issues/0/predicted.png",
    }
    seen = []
    for offset in range(0, N_ISSUES, 35):
        seen += client.get(f"/jobs/{issues_job}/label-issues?offset={offset}&limit=35").json()["issues"]
    assert [i["rank"] for i in seen] == list(range(1, N_ISSUES + 1))
    assert [i["index"] for i in seen] == list(range(0, 3 * N_ISSUES, 3))
    assert [i["given_overlay_url"] is not None for i in seen] == [r < OVERLAID for r in range(N_ISSUES)]
    assert client.get(f"/jobs/{issues_job}/label-issues?offset=1000").json()["issues"] == []


def test_label_issue_overlays_are_served_by_index_and_target(client: TestClient, issues_job: str) -> None:
    for target in ("given", "predicted"):
        response = client.get(f"/jobs/{issues_job}/label-issues/3/{target}.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    for path in ("4/given.png", f"{3 * OVERLAID}/given.png"):  # no issue; an issue past the overlaid ones
        response = client.get(f"/jobs/{issues_job}/label-issues/{path}")
        assert response.status_code == 404 and "no given overlay" in response.json()["detail"]
    for path, name in (("3/true.png", "target"), ("-1/given.png", "index"), ("x/given.png", "index")):
        response = client.get(f"/jobs/{issues_job}/label-issues/{path}")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", name]


@pytest.mark.parametrize(
    ("query", "name"), [("limit=0", "limit"), ("limit=201", "limit"), ("offset=-1", "offset"), ("limit=x", "limit")]
)
def test_bad_paging_is_422_naming_the_parameter(client: TestClient, issues_job: str, query: str, name: str) -> None:
    response = client.get(f"/jobs/{issues_job}/label-issues?{query}")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", name]


@pytest.mark.parametrize(
    ("kind", "status", "why"),
    [
        ("train", "running", "it is running"),
        ("train", "queued", "it is queued"),
        ("lr_finder", "succeeded", "an LR-finder job has none"),
        ("train", "failed", "it failed without them"),
    ],
)
def test_a_job_without_label_issues_is_404_saying_why(
    client: TestClient, session: Session, kind: str, status: str, why: str
) -> None:
    job = put_job(session, kind=kind, status=status)
    for path in ("label-issues", "label-issues/0/given.png"):
        response = client.get(f"/jobs/{job.id}/{path}")
        assert response.status_code == 404 and why in response.json()["detail"]
    assert client.get("/jobs/nope/label-issues").status_code == 404
