"""A training job's test examples as data: paging, class filters, sorting, the overlays, the confusion
matrix, and 404/422 that say why. The job folder holds an examples.json written by ml.examples and a few
overlay PNGs, registered as the worker registers a finished run's files."""

from __future__ import annotations

import numpy as np
import pytest
from api_support import png_bytes, put_job
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from core.config import Settings
from ml import examples
from ml.examples import Examples
from worker.outputs import register_artifacts

CLASSES = ["cat", "dog", "bird"]
N = 300  # test images
OVERLAID = [0, 1, 2, 5]


def table() -> Examples:
    """Image i is of class i % 3, predicted right when i % 4 != 0 (else the next class), confidence
    falling with i (ties in pairs: 2k and 2k+1 share one)."""
    true = np.arange(N) % 3
    pred = np.where(np.arange(N) % 4 == 0, (true + 1) % 3, true)
    confidence = 1.0 - (np.arange(N) // 2) / N
    true_probability = np.where(pred == true, confidence, 0.5 * (1 - confidence))
    return Examples(CLASSES, true, pred, confidence, true_probability, np.array(OVERLAID), overlay_size=96)


@pytest.fixture
def job_id(settings: Settings, session: Session) -> str:
    job = put_job(session, status="succeeded")
    folder = settings.ARTIFACTS_DIR / job.id
    (folder / examples.OVERLAY_FOLDER).mkdir(parents=True)
    examples.save(table(), folder / examples.FILE_NAME)
    for index in OVERLAID:
        (folder / examples.OVERLAY_FOLDER / f"{index}.png").write_bytes(png_bytes(color=(index, 0, 0)))
    (folder / examples.OVERLAY_FOLDER / "7.png").write_bytes(png_bytes())  # on disk, but not in the table
    assert register_artifacts(session, job.id, out_dir=folder, root=settings.ARTIFACTS_DIR.resolve(), extra=[]) == 1
    return str(job.id)


def test_misclassified_by_default_most_confident_first_with_overlay_urls(client: TestClient, job_id: str) -> None:
    body = client.get(f"/jobs/{job_id}/examples").json()
    assert body["total"] == N // 4 and len(body["examples"]) == 50
    first = body["examples"][0]
    assert first == {
        "index": 0,
        "true_class": "cat",
        "pred_class": "dog",
        "confidence": 1.0,
        "true_probability": 0.0,
        "overlay_url": f"/jobs/{job_id}/examples/0.png",
    }
    indices = [e["index"] for e in body["examples"]]
    assert indices == list(range(0, 200, 4)) and all(e["true_class"] != e["pred_class"] for e in body["examples"])
    assert [e["overlay_url"] is not None for e in body["examples"][:3]] == [True, False, False]


def test_pages_cover_every_example_once(client: TestClient, job_id: str) -> None:
    seen = []
    for offset in range(0, N, 70):
        page = client.get(f"/jobs/{job_id}/examples?kind=all&sort=index&limit=70&offset={offset}").json()
        assert page["total"] == N
        seen += [e["index"] for e in page["examples"]]
    assert seen == list(range(N))
    beyond = client.get(f"/jobs/{job_id}/examples?offset=100000").json()
    assert beyond == {"examples": [], "total": N // 4}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kind=correct&sort=confidence&limit=3", [298, 299, 297]),  # least confident first; ties: index order
        ("kind=correct&sort=-confidence&limit=3", [1, 2, 3]),
        ("kind=misclassified&sort=confidence&limit=2", [296, 292]),
        ("kind=all&sort=-confidence&limit=4", [0, 1, 2, 3]),
        ("kind=misclassified&true_class=bird&sort=index&limit=3", [8, 20, 32]),
        ("kind=all&true_class=cat&pred_class=dog&sort=index&limit=3", [0, 12, 24]),
        ("kind=correct&true_class=cat&pred_class=dog", []),
        ("kind=all&true_class=&pred_class=&sort=index&limit=2", [0, 1]),  # empty: any class
    ],
)
def test_kind_filters_and_sorting(client: TestClient, job_id: str, query: str, expected: list[int]) -> None:
    body = client.get(f"/jobs/{job_id}/examples?{query}").json()
    assert [e["index"] for e in body["examples"]] == expected


def test_a_confusion_cell_lists_exactly_its_images(client: TestClient, job_id: str) -> None:
    cells = client.get(f"/jobs/{job_id}/confusion").json()
    assert cells["classes"] == CLASSES and cells["total"] == N and cells["test_time_flip"] is False
    t = table()
    assert cells["confusion"] == t.confusion().tolist() and sum(map(sum, cells["confusion"])) == N
    for i, true_class in enumerate(CLASSES):
        for j, pred_class in enumerate(CLASSES):
            query = f"kind=all&true_class={true_class}&pred_class={pred_class}&limit=200"
            body = client.get(f"/jobs/{job_id}/examples?{query}").json()
            assert body["total"] == cells["confusion"][i][j]
            assert {e["index"] for e in body["examples"]} == set(np.flatnonzero((t.true == i) & (t.pred == j)).tolist())


def test_overlays_are_served_only_for_the_table(client: TestClient, job_id: str) -> None:
    png = client.get(f"/jobs/{job_id}/examples/5.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == png_bytes(color=(5, 0, 0))
    for index in ("7", "3", "299", "100000"):  # on disk but not listed; listed nowhere; in range, no overlay
        response = client.get(f"/jobs/{job_id}/examples/{index}.png")
        assert response.status_code == 404 and "no overlay" in response.json()["detail"]
    for bad in ("-1", "abc", "..%2F..%2Fexamples", "1e3", "99999999999"):
        response = client.get(f"/jobs/{job_id}/examples/{bad}.png")
        assert response.status_code in (404, 422), (bad, response.status_code)
        assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("query", "parameter", "allowed"),
    [
        ("kind=wrong", "kind", "'misclassified', 'correct' or 'all'"),
        ("sort=accuracy", "sort", "'-confidence', 'confidence' or 'index'"),
        ("limit=201", "limit", "200"),
        ("limit=0", "limit", "1"),
        ("offset=-1", "offset", "0"),
        ("true_class=cow", "true_class", "['cat', 'dog', 'bird']"),
        ("pred_class=Cat", "pred_class", "['cat', 'dog', 'bird']"),
    ],
)
def test_bad_query_values_are_422_naming_the_parameter_and_what_is_allowed(
    client: TestClient, job_id: str, query: str, parameter: str, allowed: str
) -> None:
    response = client.get(f"/jobs/{job_id}/examples?{query}")
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", parameter] and allowed in error["msg"]


@pytest.mark.parametrize("path", ["/examples", "/examples/0.png", "/confusion"])
def test_404_says_why_there_are_no_examples(client: TestClient, session: Session, path: str) -> None:
    assert client.get(f"/jobs/nope{path}").status_code == 404
    reasons = {
        put_job(session, status="running").id: "it is running",
        put_job(session, kind="lr_finder", status="succeeded").id: "an LR-finder job has none",
        put_job(session, status="failed").id: "it failed without them",
    }
    for job_id, reason in reasons.items():
        response = client.get(f"/jobs/{job_id}{path}")
        assert response.status_code == 404 and reason in response.json()["detail"], response.text


def test_a_rewritten_examples_json_is_read_again(client: TestClient, job_id: str, settings: Settings) -> None:
    assert client.get(f"/jobs/{job_id}/examples").json()["total"] == N // 4
    t = table()
    smaller = Examples(CLASSES, t.true[:10], t.pred[:10], t.confidence[:10], t.true_probability[:10], np.array([0]))
    examples.save(smaller, settings.ARTIFACTS_DIR / job_id / examples.FILE_NAME)
    assert client.get(f"/jobs/{job_id}/examples").json()["total"] == 3  # 0, 4, 8
