"""Label audits over HTTP: POST /jobs/audit validates and queues one, the jobs list filters by the kind,
its metrics are its folds and issue count, and its label issues say why they are not there yet."""

from __future__ import annotations

import numpy as np
import pytest
from api_support import TRAIN_PARAMS, FakeBroker, put_job
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.store import ArtifactFile
from ml import label_issues
from ml.specs import AuditSpec

AUDIT = TRAIN_PARAMS | {"epochs": 3, "folds": 5}


def test_post_audit_records_the_validated_spec_then_enqueues_it(client: TestClient, broker: FakeBroker) -> None:
    response = client.post("/jobs/audit", json=AUDIT | {"name": "labels", "tags": ["audit"]})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "audit" and job["status"] == "queued" and job["name"] == "labels"
    assert job["params"] == AuditSpec.model_validate(AUDIT).model_dump(mode="json") and job["params"]["folds"] == 5
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert broker.sent == [(job["id"], "audit", job["params"])]
    assert [j["id"] for j in client.get("/jobs?kind=audit").json()["jobs"]] == [job["id"]]
    assert client.get("/jobs?kind=train").json()["jobs"] == []
    metrics = client.get(f"/jobs/{job['id']}/metrics").json()
    assert metrics == {
        "job_id": job["id"],
        "status": "queued",
        "folds": [],
        "images": None,
        "scored": None,
        "accuracy": None,
        "label_issues": None,
        "stop_reason": None,
        "warnings": [],
    }
    issues = client.get(f"/jobs/{job['id']}/label-issues")
    assert issues.status_code == 404 and "found when its last fold ends" in issues.json()["detail"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"folds": 1}, "greater than or equal to 2"),
        ({"folds": 11}, "less than or equal to 10"),
        ({"validation_split": 0.1}, "validation_split must be null in an audit"),
        ({"target_accuracy": 0.9}, "target_accuracy must be null in an audit"),
    ],
)
def test_bad_audits_are_422_saying_what_to_change(
    client: TestClient, broker: FakeBroker, change: dict[str, object], message: str
) -> None:
    response = client.post("/jobs/audit", json=AUDIT | change)
    assert response.status_code == 422 and message in response.text
    assert broker.sent == []


def test_a_finished_audit_serves_its_folds_and_label_issues(
    client: TestClient, session: Session, settings: Settings
) -> None:
    folds = [{"fold": 1, "images": 50, "accuracy": 0.9, "seconds": 3.2}, {"fold": 2, "images": 50, "accuracy": 0.8}]
    result = {"folds": folds, "images": 100, "scored": 100, "accuracy": 0.85, "label_issues": 7}
    params = AuditSpec.model_validate(AUDIT | {"folds": 2}).model_dump(mode="json")
    job = put_job(
        session, kind="audit", status="succeeded", params=params, result=result | {"stop_reason": "completed"}
    )
    metrics = client.get(f"/jobs/{job.id}/metrics").json()
    assert metrics["folds"] == folds and metrics["label_issues"] == 7 and metrics["stop_reason"] == "completed"
    assert client.get(f"/jobs/{job.id}").json()["kind"] == "audit"
    issues = client.get(f"/jobs/{job.id}/label-issues")
    assert issues.status_code == 404 and "without them" in issues.json()["detail"]  # no file yet

    folder = settings.ARTIFACTS_DIR / job.id
    folder.mkdir(parents=True)
    found = label_issues.find(
        np.array([0, 0, 0, 1, 1, 1]),
        np.array([[0.9, 0.1]] * 2 + [[0.05, 0.95]] + [[0.1, 0.9]] * 3),
        ["cat", "dog"],
        set_name="train",
    )
    path = label_issues.save(found, folder / label_issues.FILE_NAME)
    store.add_artifacts(
        session,
        job.id,
        [ArtifactFile(name=path.name, media_type="application/json", path=f"{job.id}/{path.name}")],
    )
    body = client.get(f"/jobs/{job.id}/label-issues").json()
    assert body["set"] == "train" and body["scored"] == 6
    assert [(i["index"], i["given_class"], i["predicted_class"]) for i in body["issues"]] == [(2, "cat", "dog")]
