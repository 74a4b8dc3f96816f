"""Datasets over HTTP: an archive in, an importing then ready dataset out, jobs that train on it by
id, refusals that name their cause and leave nothing behind, deletion guarded by the jobs using it."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from api_support import FakeBroker
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.db import utcnow
from service.reconciler import reconcile

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def split_layout(train: int = 4, test: int = 2, classes: tuple[str, ...] = ("cat", "dog")) -> dict[str, bytes]:
    members = {}
    for name in classes:
        for i in range(train):
            members[f"pets/train/{name}/{i}.png"] = png(COLOURS[name])
        for i in range(test):
            members[f"pets/test/{name}/{i}.png"] = png(COLOURS[name])
    return members


def upload(client: TestClient, data: bytes, filename: str = "pets.zip", **fields: Any) -> Any:
    return client.post("/datasets", files={"file": (filename, data)}, data={k: str(v) for k, v in fields.items()})


def wait_ready(client: TestClient, dataset_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (dataset := client.get(f"/datasets/{dataset_id}").json())["status"] == "importing":
        assert time.monotonic() < deadline, dataset
        time.sleep(0.05)
    return dataset


def uploads(settings: Settings) -> list[str]:
    """What DATA_DIR/uploads holds, the incoming folder's contents included."""
    root = settings.DATA_DIR / "uploads"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.is_dir() else []


def test_an_archive_becomes_a_dataset_that_jobs_train_on(
    client: TestClient, settings: Settings, broker: FakeBroker
) -> None:
    response = upload(client, zip_of(split_layout() | {"pets/README.txt": b"hello"}))
    assert response.status_code == 202, response.text
    dataset = response.json()
    assert response.headers["location"] == f"/datasets/{dataset['id']}" and dataset["name"] == "pets"
    dataset = wait_ready(client, dataset["id"])
    assert dataset["status"] == "ready", dataset
    assert dataset["classes"] == ["cat", "dog"]
    assert dataset["counts"] == {"train": {"cat": 4, "dog": 4}, "test": {"cat": 2, "dog": 2}}
    assert dataset["image_size"] == [10, 12] and dataset["channels"] == 3
    assert [s["member"] for s in dataset["skipped"]] == ["pets/README.txt"]
    folder = settings.DATA_DIR / "uploads" / dataset["id"]
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["cat", "dog"]

    samples = client.get(f"/datasets/{dataset['id']}/samples.png")
    assert samples.status_code == 200 and samples.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(samples.content)).size[1] == 2 * (64 + 2)  # a row per class
    listed = client.get("/datasets").json()
    assert [d["id"] for d in listed["uploaded"]] == [dataset["id"]]

    spec = {"dataset": {"name": "uploaded", "id": dataset["id"], "image_size": 16}, "epochs": 1}
    job = client.post("/jobs/train", json=spec)
    assert job.status_code == 202, job.text
    assert broker.sent[-1][2]["dataset"]["id"] == dataset["id"]


def test_the_flat_layout_is_split_by_test_fraction_and_seed(client: TestClient) -> None:
    members = {f"{name}/{i}.png": png(colour) for name, colour in COLOURS.items() for i in range(10)}
    first = wait_ready(client, upload(client, zip_of(members), test_fraction=0.3, seed=1).json()["id"])
    assert first["counts"] == {"train": dict.fromkeys(COLOURS, 7), "test": dict.fromkeys(COLOURS, 3)}
    assert first["name"] == "pets"


def test_a_tar_gz_with_a_name_field(client: TestClient) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in split_layout().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    dataset = upload(client, out.getvalue(), filename="pets.tar.gz", name="my pets").json()
    assert dataset["name"] == "my pets" and wait_ready(client, dataset["id"])["status"] == "ready"


@pytest.mark.parametrize(
    ("members", "code", "words"),
    [
        ({"../evil.png": png(COLOURS["cat"])} | split_layout(), 422, "../evil.png"),
        ({"/abs/evil.png": png(COLOURS["cat"])} | split_layout(), 422, "/abs/evil.png"),
    ],
    ids=["dot-dot", "absolute"],
)
def test_hostile_members_are_refused_naming_them_and_nothing_is_kept(
    client: TestClient, settings: Settings, members: dict[str, bytes], code: int, words: str
) -> None:
    response = upload(client, zip_of(members))
    assert response.status_code == code and words in response.json()["detail"], response.text
    assert uploads(settings) in ([], [".incoming"])
    assert client.get("/datasets").json()["uploaded"] == []


def test_not_an_archive_is_415_and_too_large_is_413(client: TestClient, settings: Settings, configure) -> None:
    response = upload(client, png(COLOURS["cat"]), filename="pets.zip")
    assert response.status_code == 415, response.text
    configure(MAX_DATASET_BYTES=1000)
    with TestClient(client.app, base_url=str(client.base_url), client=("127.0.0.1", 50000)) as small:
        response = upload(small, zip_of(split_layout()))
    assert response.status_code == 413 and "MAX_DATASET_BYTES" in response.json()["detail"], response.text
    assert uploads(settings) in ([], [".incoming"])


def test_more_members_than_the_limit_is_413(client: TestClient, configure) -> None:
    configure(MAX_DATASET_MEMBERS=5)
    with TestClient(client.app, base_url=str(client.base_url), client=("127.0.0.1", 50000)) as small:
        response = upload(small, zip_of(split_layout()))
    assert response.status_code == 413 and "5" in response.json()["detail"], response.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"test_fraction": "0.9"}, "test_fraction"),
        ({"test_fraction": "nan"}, "test_fraction"),
        ({"seed": "-1"}, "seed"),
        ({"name": "x" * 101}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_form_fields_are_422_naming_the_field(client: TestClient, fields: dict[str, str], field: str) -> None:
    response = upload(client, zip_of(split_layout()), **fields)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_no_archive_is_422(client: TestClient) -> None:
    response = client.post("/datasets", data={"name": "pets"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "file"]


def test_a_layout_without_two_classes_is_422_and_nothing_is_kept(client: TestClient, settings: Settings) -> None:
    response = upload(client, zip_of(split_layout(classes=("cat",))))
    assert response.status_code == 422 and "only one class" in response.json()["detail"], response.text
    assert uploads(settings) in ([], [".incoming"])


def test_an_import_that_fails_says_why_and_leaves_no_files(client: TestClient, settings: Settings) -> None:
    members = split_layout(train=2, test=1) | {"pets/train/fox/0.png": b"\x89PNG\r\n\x1a\n broken"}
    dataset = wait_ready(client, upload(client, zip_of(members)).json()["id"])
    assert dataset["status"] == "failed" and "'fox' has no decodable training image" in dataset["error"], dataset
    assert uploads(settings) in ([], [".incoming"])
    spec = {"dataset": {"name": "uploaded", "id": dataset["id"]}}
    response = client.post("/jobs/train", json=spec)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "dataset", "id"]
    assert "failed" in response.json()["detail"][0]["msg"]


def test_jobs_name_an_existing_dataset(client: TestClient) -> None:
    unknown = {"dataset": {"name": "uploaded", "id": "0" * 32}}
    response = client.post("/jobs/train", json=unknown)
    assert response.status_code == 422 and "no uploaded dataset" in response.json()["detail"][0]["msg"]
    malformed = client.post("/jobs/lr-finder", json={"dataset": {"name": "uploaded", "id": "../../etc"}})
    assert malformed.status_code == 422
    missing = client.post("/jobs/train", json={"dataset": {"name": "uploaded"}})
    assert missing.status_code == 422 and "dataset.id is required" in missing.text


def test_delete_is_refused_while_a_job_uses_it_then_removes_the_files(
    client: TestClient, settings: Settings, session: Session
) -> None:
    dataset = wait_ready(client, upload(client, zip_of(split_layout())).json()["id"])
    job = client.post("/jobs/train", json={"dataset": {"name": "uploaded", "id": dataset["id"]}}).json()
    refused = client.delete(f"/datasets/{dataset['id']}")
    assert refused.status_code == 409 and job["id"] in refused.json()["detail"]
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 202
    assert client.delete(f"/datasets/{dataset['id']}").status_code == 204
    assert client.get(f"/datasets/{dataset['id']}").status_code == 404
    assert not (settings.DATA_DIR / "uploads" / dataset["id"]).exists()
    assert client.delete(f"/datasets/{dataset['id']}").status_code == 404


def test_an_import_whose_process_stopped_is_failed_by_the_reconciler(
    settings: Settings, session: Session, broker: FakeBroker
) -> None:
    dataset = store.create_dataset(session, name="pets")
    leftover = settings.DATA_DIR / "uploads" / dataset.id
    leftover.mkdir(parents=True)
    assert reconcile(settings, broker).imports_failed == []  # just created: alive
    dataset.created_at = utcnow() - timedelta(hours=1)
    session.commit()
    assert reconcile(settings, broker).imports_failed == [dataset.id]
    session.expire_all()
    failed = store.get_dataset(session, dataset.id)
    assert failed is not None and failed.status == "failed" and "interrupted" in (failed.error or "")
    assert not leftover.exists()


def test_the_sample_grid_names_each_row_within_its_label_column(tmp_path) -> None:
    """Each row's class name is large enough to read, and one longer than the label column is cut with an
    ellipsis, never drawn over the tiles."""
    from service.dataset_imports import GAP, LABEL_WIDTH, SAMPLE_SIDE, write_samples

    long_name = "connector_housing_with_hairline_crack"
    for name in ("ok", long_name):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "a.png").write_bytes(png((255, 255, 255), (20, 20)))
    grid = Image.open(write_samples(tmp_path, tmp_path / "samples.png")).convert("L")
    step = SAMPLE_SIDE + GAP
    for row in range(2):
        label = grid.crop((0, row * step, LABEL_WIDTH, row * step + SAMPLE_SIDE))
        assert label.getextrema()[0] < 100  # the name is drawn, dark on white
        top, bottom = label.point(lambda v: 255 if v < 128 else 0).getbbox()[1::2]
        assert bottom - top >= 12  # tall enough to read where the page halves the grid (a phone)
    tile_strip = grid.crop((LABEL_WIDTH, step, LABEL_WIDTH + SAMPLE_SIDE, step + SAMPLE_SIDE))
    assert tile_strip.getextrema() == (255, 255)  # the long name stopped before its (white) tile


def test_the_sample_tiles_show_the_images_as_training_sees_them(tmp_path) -> None:
    """A transparent PNG on white, not its hidden colour; a 16-bit one scaled to 8 bits, not clipped white."""
    from service.dataset_imports import GAP, LABEL_WIDTH, SAMPLE_SIDE, write_samples

    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(tmp_path / "train" / "a" / "clear.png")
    Image.fromarray(np.full((20, 20), 40_000, np.uint16)).save(tmp_path / "train" / "a" / "sixteen.png")
    grid = Image.open(write_samples(tmp_path, tmp_path / "samples.png")).convert("RGB")
    centre = SAMPLE_SIDE // 2
    assert grid.getpixel((LABEL_WIDTH + centre, centre)) == (255, 255, 255)  # clear.png: white
    scaled = int(40_000 * 255 / 65_535)  # 155, not 255
    assert grid.getpixel((LABEL_WIDTH + SAMPLE_SIDE + GAP + centre, centre)) == (scaled,) * 3
