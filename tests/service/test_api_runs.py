"""Runs a person can find, name and clean up: name, tags and note at submission and with PATCH, the
list's filters, search and sorts (on SQLite and PostgreSQL), queued jobs' places in line, and DELETE
with the files it removes and the jobs it refuses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from api_support import LR_FINDER_PARAMS, TRAIN_PARAMS, FakeBroker, put_job
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.db import Job, session_for, utcnow
from ml.specs import TrainSpec


def submit(client: TestClient, **labels: Any) -> dict[str, Any]:
    response = client.post("/jobs/train", json={**TRAIN_PARAMS, **labels})
    assert response.status_code == 202, response.text
    return response.json()


def finished(session: Session, *, best: float | None, last: float | None, seconds: float = 1, **labels: Any) -> Job:
    """A succeeded train job with these accuracies, that ran for `seconds`, labelled."""
    result = {
        "best": None if best is None else {"epoch": 1, "test_acc": best},
        "last": None if last is None else {"epoch": 2, "test_acc": last},
    }
    job = put_job(session, status="succeeded", result=result)
    started = utcnow() - timedelta(hours=1)
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(started_at=started, finished_at=started + timedelta(seconds=seconds), **labels)
    )
    session.commit()
    return job


def test_labels_sit_beside_the_spec_never_in_it(client: TestClient, broker: FakeBroker) -> None:
    job = submit(client, name="  baseline  ", tags=[" cifar ", "sweep", "cifar"], note="first try\nlr 0.05")
    assert (job["name"], job["tags"], job["note"]) == ("baseline", ["cifar", "sweep"], "first try\nlr 0.05")
    assert job["params"] == TrainSpec.model_validate(TRAIN_PARAMS).model_dump(mode="json")  # what trains
    assert broker.sent == [(job["id"], "train", job["params"])] and "name" not in broker.sent[0][2]
    finder = client.post("/jobs/lr-finder", json={**LR_FINDER_PARAMS, "name": "range test", "tags": ["lr"]}).json()
    assert (finder["name"], finder["tags"], finder["note"]) == ("range test", ["lr"], None)
    plain = submit(client)
    assert (plain["name"], plain["tags"], plain["note"]) == (None, [], None)
    assert client.get(f"/jobs/{job['id']}").json()["tags"] == ["cifar", "sweep"]


@pytest.mark.parametrize(
    ("labels", "loc", "words"),
    [
        ({"name": "n" * 101}, ["body", "name"], "at most 100 characters"),
        ({"tags": [f"t{i}" for i in range(21)]}, ["body", "tags"], "at most 20 items"),
        ({"tags": ["ok", "   "]}, ["body", "tags", 1], "at least 1 character"),
        ({"tags": ["t" * 41]}, ["body", "tags", 0], "at most 40 characters"),
        ({"tags": "one"}, ["body", "tags"], "valid list"),
        ({"note": "n" * 2001}, ["body", "note"], "at most 2000 characters"),
        ({"name": "a\x00b"}, ["body", "name"], "control character"),
        ({"name": "two\nlines"}, ["body", "name"], "control character"),
    ],
)
def test_bad_labels_are_422_naming_the_field(
    client: TestClient, broker: FakeBroker, labels: dict[str, Any], loc: list[Any], words: str
) -> None:
    response = client.post("/jobs/train", json={**TRAIN_PARAMS, **labels})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(error["loc"] == loc and words in error["msg"] for error in errors), errors
    assert broker.sent == []
    target = submit(client)["id"]
    response = client.patch(f"/jobs/{target}", json=labels)
    assert response.status_code == 422
    assert any(error["loc"] == loc and words in error["msg"] for error in response.json()["detail"])


def test_patch_sets_only_what_it_is_given(client: TestClient, session: Session) -> None:
    job = submit(client, name="first", tags=["a"], note="keep me")
    renamed = client.patch(f"/jobs/{job['id']}", json={"name": " second "})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["tags"], renamed.json()["note"]) == ("second", ["a"], "keep me")
    assert client.get(f"/jobs/{job['id']}").json() == renamed.json()
    cleared = client.patch(f"/jobs/{job['id']}", json={"name": "", "tags": [], "note": None}).json()
    assert (cleared["name"], cleared["tags"], cleared["note"]) == (None, [], None)
    assert client.patch(f"/jobs/{job['id']}", json={"tags": None}).json()["tags"] == []
    running = put_job(session, status="running")  # labels never change what trains: any status
    assert client.patch(f"/jobs/{running.id}", json={"tags": ["live"]}).json()["tags"] == ["live"]
    assert client.patch(f"/jobs/{running.id}", json={"tags": ["live"]}).json()["status"] == "running"

    nothing = client.patch(f"/jobs/{job['id']}", json={})
    assert nothing.status_code == 422 and "give any of name, tags, note" in nothing.text
    spec_field = client.patch(f"/jobs/{job['id']}", json={"epochs": 3})
    assert spec_field.status_code == 422 and spec_field.json()["detail"][0]["loc"] == ["body", "epochs"]
    missing = client.patch("/jobs/0123456789abcdef0123456789abcdef", json={"name": "x"})
    assert missing.status_code == 404 and "no job with id" in missing.json()["detail"]


def listed(client: TestClient, query: str) -> list[str]:
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 200, response.text
    body = response.json()
    return [job["id"] for job in body["jobs"]]


def test_filters_search_and_total(client: TestClient, session: Session) -> None:
    a = submit(client, name="Baseline ResNet", tags=["cifar", "sweep"])["id"]
    b = submit(client, name="wide one", tags=["sweep"], note="Width 16, LR from the finder")["id"]
    c = client.post("/jobs/lr-finder", json={**LR_FINDER_PARAMS, "tags": ["Sweep-2"]}).json()["id"]
    d = client.post(
        "/jobs/train", json={**TRAIN_PARAMS, "model": {"name": "custom_resnet", "width": 4}, "name": "100%_done"}
    ).json()["id"]
    assert listed(client, "tag=sweep") == [b, a]  # exact tags, newest first
    assert listed(client, "tag=swee") == [] and listed(client, "tag=") == [d, c, b, a]
    assert listed(client, "q=BASELINE") == [a]
    assert listed(client, "q=width 16") == [b]  # the note
    assert listed(client, "q=sweep-") == [c]  # part of a tag, any case
    assert listed(client, f"q={a[4:12]}") == [a]  # part of the id
    assert listed(client, "q=%25_") == [d]  # LIKE's wildcards are plain characters
    assert listed(client, "model=custom_resnet") == [d]
    assert listed(client, "dataset=fashion_mnist&kind=train") == [d, b, a]
    assert listed(client, "q=sweep&kind=train") == [b, a]
    page = client.get("/jobs?tag=sweep&limit=1&offset=1").json()
    assert [job["id"] for job in page["jobs"]] == [a] and page["total"] == 2
    assert client.get("/jobs?q=nothing-like-it").json() == {"jobs": [], "total": 0}


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("sort=accuracy", ["created", "-created", "name", "best", "last", "duration"]),
        ("dataset=mnist", ["cifar10", "fashion_mnist", "image_folder", "uploaded"]),
        ("model=vgg", ["resnet18", "custom_resnet"]),
        ("tag=" + "t" * 41, ["at most 40 characters"]),
        ("q=a%00b", ["NUL"]),
    ],
)
def test_unknown_filter_values_are_422_naming_the_allowed_ones(
    client: TestClient, query: str, words: list[str]
) -> None:
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["query", query.split("=")[0]]
    assert all(word in error["msg"] for word in words), error


def test_sorts(client: TestClient, session: Session) -> None:
    low = finished(session, best=0.5, last=0.4, seconds=30, name="beta").id
    high = finished(session, best=0.9, last=0.6, seconds=10, name="Alpha").id
    mid = finished(session, best=0.7, last=0.7, seconds=20).id
    queued = put_job(session).id  # no accuracy, no start, no name: last in every sort but created
    assert listed(client, "") == [queued, mid, high, low]
    assert listed(client, "sort=-created") == [low, high, mid, queued]
    assert listed(client, "sort=best") == [high, mid, low, queued]
    assert listed(client, "sort=-best") == [low, mid, high, queued]
    assert listed(client, "sort=last") == [mid, high, low, queued]
    assert listed(client, "sort=duration") == [low, mid, high, queued]
    assert listed(client, "sort=-duration") == [high, mid, low, queued]
    assert listed(client, "sort=name") == [high, low, queued, mid]  # A-Z whatever the case; unnamed newest first
    assert listed(client, "sort=-name") == [low, high, queued, mid]
    page = client.get("/jobs?sort=best&limit=2&offset=1").json()
    assert [job["id"] for job in page["jobs"]] == [mid, low] and page["total"] == 4


def test_filters_and_sorts_on_both_stores(database_url: str) -> None:
    """The JSON parts (tags, the spec's names, the result's accuracies) and the duration in SQL of
    each store."""
    with session_for(database_url) as session:
        jobs = {}
        started = utcnow() - timedelta(hours=1)
        for key, best, tags, name, seconds in [
            ("a", 0.6, ["x", "Shared"], "first", 30),
            ("b", 0.8, ["shared"], None, 10),
            ("c", None, [], "third", None),
        ]:
            job = put_job(session, status="succeeded", result={"best": best and {"epoch": 1, "test_acc": best}})
            times = {"started_at": None} if seconds is None else {"finished_at": started + timedelta(seconds=seconds)}
            session.execute(update(Job).where(Job.id == job.id).values(tags=tags, name=name, **times))
            session.execute(update(Job).where(Job.id == job.id, Job.started_at.is_not(None)).values(started_at=started))
            session.commit()
            jobs[key] = job.id

        def ids(filters: store.JobFilters | None = None, sort: store.JobSort = "created") -> list[str]:
            found, total = store.list_jobs(session, filters, sort=sort)
            assert total == len(found)
            return [next(k for k, v in jobs.items() if v == job.id) for job in found]

        assert ids() == ["c", "b", "a"]
        assert ids(store.JobFilters(tag="shared")) == ["b"]
        assert ids(store.JobFilters(q="SHARED")) == ["b", "a"]
        assert ids(store.JobFilters(q="thi")) == ["c"]
        assert ids(store.JobFilters(dataset="fashion_mnist", model="resnet18")) == ["c", "b", "a"]
        assert ids(store.JobFilters(dataset="cifar10")) == []
        assert ids(sort="best") == ["b", "a", "c"]
        assert ids(sort="name") == ["a", "c", "b"]
        assert ids(sort="duration") == ["a", "b", "c"] and ids(sort="-duration") == ["b", "a", "c"]
        assert ids(store.JobFilters(tag="shared", q="shar"), sort="-best") == ["b"]


def test_queued_jobs_know_their_place_in_line(client: TestClient, session: Session) -> None:
    first, second, third = (submit(client) for _ in range(3))
    assert [job["queue_position"] for job in (first, second, third)] == [1, 2, 3]
    store.claim_job(session, first["id"], worker="w", lease_seconds=60)
    assert client.get(f"/jobs/{first['id']}").json()["queue_position"] is None
    assert client.get(f"/jobs/{third['id']}").json()["queue_position"] == 2
    listed = client.get("/jobs").json()["jobs"]
    assert [(job["status"], job["queue_position"]) for job in listed] == [
        ("queued", 2),
        ("queued", 1),
        ("running", None),
    ]
    assert client.post(f"/jobs/{second['id']}/cancel").json()["queue_position"] is None
    assert client.get(f"/jobs/{third['id']}").json()["queue_position"] == 1


def with_files(session: Session, settings: Settings, job: Job) -> tuple[Path, str]:
    """The job's folder with an artifact and a checkpoint folder in it, as the worker leaves them."""
    folder = settings.ARTIFACTS_DIR / job.id
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    (folder / "accuracy.png").write_bytes(b"png")
    (folder / "job.log").write_text("log\n")
    store.add_artifacts(session, job.id, [store.ArtifactFile("accuracy.png", "image/png", f"{job.id}/accuracy.png")])
    store.add_epoch(session, job.id, {"epoch": 1, "test_acc": 0.5})
    checkpoint = store.add_checkpoint(
        session,
        job_id=job.id,
        model={"name": "resnet18", "width": 4},
        dataset="fashion_mnist",
        classes=["a", "b"],
        test_acc=0.5,
        epoch=1,
        path=f"{job.id}/checkpoint",
    )
    assert checkpoint is not None
    return folder, checkpoint.id


def test_delete_removes_a_finished_job_its_rows_and_its_files(
    client: TestClient, session: Session, settings: Settings
) -> None:
    old = put_job(session, status="succeeded")
    folder, checkpoint_id = with_files(session, settings, old)
    newer = put_job(session, status="succeeded")
    with_files(session, settings, newer)  # the latest checkpoint is another job's
    response = client.delete(f"/jobs/{old.id}")
    assert response.status_code == 204 and response.content == b""
    assert not folder.exists() and (settings.ARTIFACTS_DIR / newer.id / "checkpoint").is_dir()
    assert client.get(f"/jobs/{old.id}").status_code == 404
    assert client.get(f"/checkpoints/{checkpoint_id}").status_code == 404
    assert store.list_epochs(session, old.id) == [] and store.list_artifacts(session, old.id) == []
    assert [job["id"] for job in client.get("/jobs").json()["jobs"]] == [newer.id]
    assert client.delete(f"/jobs/{old.id}").status_code == 404


def test_delete_refuses_active_jobs_and_the_latest_checkpoint_without_force(
    client: TestClient, session: Session, settings: Settings
) -> None:
    for state in ("queued", "running"):
        active = put_job(session, status=state)
        response = client.delete(f"/jobs/{active.id}")
        assert response.status_code == 409 and f"is {state}; cancel it first" in response.json()["detail"]

    latest = put_job(session, status="succeeded")
    folder, checkpoint_id = with_files(session, settings, latest)
    refused = client.delete(f"/jobs/{latest.id}")
    assert refused.status_code == 409 and "the latest one" in refused.json()["detail"]
    assert "force=true" in refused.json()["detail"] and folder.is_dir()
    assert client.delete(f"/jobs/{latest.id}?force=true").status_code == 204
    assert not folder.exists() and client.get(f"/checkpoints/{checkpoint_id}").status_code == 404

    finder = put_job(session, kind="lr_finder", status="succeeded", result={"suggested_lr": 0.05})
    user = submit(client, optimizer={"lr": "auto", "lr_finder_job": finder.id})
    refused = client.delete(f"/jobs/{finder.id}")
    assert refused.status_code == 409 and user["id"] in refused.json()["detail"]
    client.post(f"/jobs/{user['id']}/cancel")
    assert client.delete(f"/jobs/{finder.id}").status_code == 204
    assert client.delete("/jobs/0123456789abcdef0123456789abcdef").status_code == 404


def test_delete_never_removes_outside_the_job_s_own_files(
    client: TestClient, session: Session, settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    other = put_job(session, status="succeeded")
    (settings.ARTIFACTS_DIR / other.id).mkdir(parents=True)
    job = put_job(session, status="succeeded")
    (settings.ARTIFACTS_DIR / job.id).mkdir()
    (settings.ARTIFACTS_DIR / job.id / "escape").symlink_to(outside)
    files = [
        store.ArtifactFile("a.txt", "text/plain", "../outside.txt"),
        store.ArtifactFile("b.txt", "text/plain", other.id),
        store.ArtifactFile("c.txt", "text/plain", "."),
        store.ArtifactFile("d.txt", "text/plain", f"{job.id}/escape"),
    ]
    store.add_artifacts(session, job.id, files)
    assert client.delete(f"/jobs/{job.id}").status_code == 204
    assert outside.read_text() == "keep" and (settings.ARTIFACTS_DIR / other.id).is_dir()
    assert not (settings.ARTIFACTS_DIR / job.id).exists() and settings.ARTIFACTS_DIR.is_dir()
