"""What one request may cost, whoever sends it: bodies bounded before they are parsed, /predict's
images decoded one at a time under a pixel budget, and errors that carry a request id but no
internals."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import TRAIN_PARAMS, FakeBroker, TestClient, make_client, png_bytes
from fastapi import HTTPException
from PIL import Image

from service.routers import catalogue
from service.uploads import Upload, decode_images

REPO = Path(__file__).resolve().parents[2]
KEY = "s3cret-key-0123456789"


def long_spec(size: int) -> bytes:
    """A train spec of about `size` bytes: a valid spec with a very long augmentation list."""
    transform = {"name": "HorizontalFlip", "p": 0.5}
    count = size // len(json.dumps(transform))
    return json.dumps({**TRAIN_PARAMS, "augmentation": [transform] * count}).encode()


@pytest.mark.parametrize("key", [None, "wrong", KEY])
def test_a_megabytes_long_spec_is_413_at_once_and_creates_nothing(configure, key: str | None) -> None:
    configure(API_KEY=KEY)
    broker = FakeBroker()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    with make_client(broker) as client:
        response = client.post("/jobs/train", content=long_spec(30 * 1024 * 1024), headers=headers)
        assert response.status_code == 413, response.text
        assert "MAX_BODY_BYTES" in response.json()["detail"]
        listed = client.get("/jobs", headers={"Authorization": f"Bearer {KEY}"})
    assert listed.json()["total"] == 0 and broker.sent == []


def test_a_chunked_body_is_stopped_once_it_passes_the_bound(configure) -> None:
    """Without Content-Length the bytes are counted as they arrive."""
    configure(MAX_BODY_BYTES=64 * 1024)
    body = long_spec(1024 * 1024)
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for start in range(0, len(body), 4096):
            sent += 1
            yield body[start : start + 4096]

    with make_client(FakeBroker()) as client:
        response = client.post("/jobs/train", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "MAX_BODY_BYTES" in response.json()["detail"]
        assert client.get("/jobs").json()["total"] == 0


def test_the_augmentation_list_has_a_documented_maximum(client: TestClient) -> None:
    from ml.specs import MAX_AUGMENTATIONS

    spec = {**TRAIN_PARAMS, "augmentation": [{"name": "HorizontalFlip", "p": 0.5}] * (MAX_AUGMENTATIONS + 1)}
    response = client.post("/jobs/train", json=spec)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"][-1] == "augmentation" and str(MAX_AUGMENTATIONS) in error["msg"]
    ok = {**TRAIN_PARAMS, "augmentation": [{"name": "HorizontalFlip", "p": 0.5}] * MAX_AUGMENTATIONS}
    assert client.post("/jobs/train", json=ok).status_code == 202


def test_every_answer_carries_a_request_id(client: TestClient) -> None:
    first, second = client.get("/health"), client.get("/health")
    assert len(first.headers["X-Request-ID"]) == 16 and first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    assert client.get("/jobs", headers={"X-Request-ID": "trace-42"}).headers["X-Request-ID"] == "trace-42"
    forged = client.get("/jobs", headers={"X-Request-ID": "x\nERROR forged log line"})
    assert forged.headers["X-Request-ID"] != "x\nERROR forged log line"


def test_an_unexpected_error_is_500_with_a_request_id_and_no_internals(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(dict):
        def items(self):
            raise RuntimeError("could not open /srv/lrcam/var/secret.db on db-7.internal:5432")

    monkeypatch.setattr(catalogue, "MODELS", Broken())
    with caplog.at_level(logging.ERROR, logger="service.middleware"):
        response = client.get("/models")
    assert response.status_code == 500, response.text
    body = response.json()
    request_id = response.headers["X-Request-ID"]
    assert body["request_id"] == request_id and request_id in body["detail"]
    assert "/srv" not in response.text and "internal:5432" not in response.text
    assert any(request_id in record.getMessage() and record.exc_info for record in caplog.records)


def big_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 30)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def test_images_are_fitted_as_they_decode_and_their_bytes_dropped() -> None:
    """Each image goes to `fit` as decoded, nothing resized before (a PNG in full), and only what `fit`
    returns is kept."""
    uploads_ = [Upload("wide.png", bytearray(png_bytes((1000, 500)))), Upload("small.png", bytearray(png_bytes()))]
    decoded: list[tuple[int, int]] = []

    def fit(image: Image.Image) -> Image.Image:
        decoded.append(image.size)
        return image.resize((32, 32))

    images = decode_images(uploads_, max_pixels=10**9, size=32, fit=fit)
    assert decoded == [(1000, 500), (40, 30)] and [image.size for image in images] == [(32, 32)] * 2
    assert all(len(upload.data) == 0 for upload in uploads_)


WORST_REQUEST = """
import resource, sys
from service.uploads import MAX_FILES, Upload, decode_images
big, small = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
budget = int(sys.argv[3])
count = budget // int(sys.argv[4])
uploads = [Upload(f"{i}.png", bytearray(big)) for i in range(count)]
uploads += [Upload(f"s{i}.png", bytearray(small)) for i in range(MAX_FILES - count)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
images = decode_images(uploads, max_pixels=budget, size=32, fit=lambda image: image.resize((32, 32)))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, len(images), (after - before) // 1024)
"""


def test_the_worst_request_the_settings_allow_decodes_in_bounded_memory(tmp_path: Path) -> None:
    """64 files, as many as a pixel budget of 160 MP (ten times the default) allows decoding to
    36-megapixel images (each a PNG of a few hundred KB): the peak grows by about one decoded image, not
    by all of them."""
    side = 6000
    (tmp_path / "big.png").write_bytes(big_png(side))
    (tmp_path / "small.png").write_bytes(png_bytes())
    budget = 160_000_000
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            WORST_REQUEST,
            str(tmp_path / "big.png"),
            str(tmp_path / "small.png"),
            str(budget),
            str(side * side),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    count, decoded, grown_mb = map(int, result.stdout.split())
    one_image_mb = side * side * 4 // 2**20  # Pillow keeps RGB in 4 bytes a pixel
    assert count >= 4 and decoded == 64
    assert grown_mb < 1.5 * one_image_mb, f"peak grew by {grown_mb} MB for {count} images of {one_image_mb} MB"


def test_the_pixel_budget_counts_what_decoding_costs() -> None:
    """Four 40 MP PNGs (tiny files) held the model thread for 1.7 s under a budget of pixels as
    declared; now a PNG counts in full and a JPEG at the scale it decodes at (1/8 of a side)."""
    from core.config import Settings

    budget = Settings().MAX_PREDICT_PIXELS
    pngs = [Upload(f"{i}.png", bytearray(big_png(4000))) for i in range(4)]  # 64 MP to decode
    with pytest.raises(HTTPException) as refused:
        decode_images(pngs, max_pixels=budget, size=32, fit=lambda image: image)
    assert refused.value.status_code == 413 and "MAX_PREDICT_PIXELS" in refused.value.detail
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (90, 120, 30)).save(buffer, format="JPEG")
    photos = [Upload(f"{i}.jpg", bytearray(buffer.getvalue())) for i in range(4)]  # 4 x 36 MP, 2.25 MP decoded
    decoded = [image.size for image in decode_images(photos, max_pixels=budget, size=256, fit=lambda image: image)]
    assert decoded == [(750, 750)] * 4  # 1/8 of a side: still more than the model's 256 px
