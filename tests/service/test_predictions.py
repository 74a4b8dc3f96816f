"""service.predictions without the router: batch keys, checkpoints found, batches run on a real
(tiny, random-weight) checkpoint."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from api_support import png_bytes
from fastapi import HTTPException
from PIL import Image
from sqlalchemy.orm import Session
from test_api_predict import CLASSES, save_checkpoint

from core.config import Settings
from service.batching import Work
from service.predictions import (
    FOUND,
    Ask,
    BatchKey,
    CheckpointNotFound,
    FoundCheckpoints,
    UnusableCheckpoint,
    run_batch,
)
from service.uploads import Upload


def ask(folder: Path, *images: bytes, topk: int = 3, target: str = "pred") -> Ask:
    uploads = [Upload(f"{i}.png", bytearray(image)) for i, image in enumerate(images)]
    return Ask(folder, uploads, topk=topk, target=target, max_pixels=10**6, device="cpu", threads=1)


def test_batch_keys_are_equal_for_the_same_checkpoint_and_kind_of_answer() -> None:
    key = BatchKey("c1", gradcam=True, method="gradcam")
    assert key == BatchKey("c1", gradcam=True, method="gradcam") and len({key, BatchKey("c1", True, "gradcam")}) == 1
    others = [BatchKey("c2", True, "gradcam"), BatchKey("c1", False, "gradcam"), BatchKey("c1", True, "gradcam++")]
    assert all(other != key for other in others) and len({key, *others}) == 4


def test_run_batch_answers_each_request_of_a_batch_with_its_own_results(settings: Settings, session: Session) -> None:
    checkpoint = save_checkpoint(settings, session)
    found = asyncio.run(FoundCheckpoints(2).find(settings.DATABASE_URL, checkpoint))
    folder = found.folder(settings.ARTIFACTS_DIR)
    key = BatchKey(checkpoint, gradcam=True, method="gradcam++")
    batch = [
        Work(key=key, images=2, payload=ask(folder, png_bytes(), png_bytes(color=(0, 0, 255)), topk=1)),
        Work(key=key, images=1, payload=ask(folder, b"not an image")),
        Work(key=key, images=1, payload=ask(folder, png_bytes(), target="dog")),
    ]
    first, refused, third = run_batch(batch)
    assert isinstance(first, list) and len(first) == 2 and all(len(p["topk"]) == 1 for p in first)
    assert isinstance(refused, HTTPException) and refused.status_code == 415
    assert isinstance(third, list) and third[0]["label"] in CLASSES
    assert third[0]["gradcam"]["method"] == "gradcam++" and third[0]["gradcam"]["target"] == "dog"


def test_a_checkpoint_that_cannot_load_answers_every_request_of_its_batch(settings: Settings, session: Session) -> None:
    checkpoint = save_checkpoint(settings, session, name="tampered")
    folder = next(settings.ARTIFACTS_DIR.glob("*/checkpoints/tampered"))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    key = BatchKey(checkpoint, gradcam=False, method="gradcam")
    outcomes = run_batch([Work(key=key, images=1, payload=ask(folder, png_bytes())) for _ in range(2)])
    assert [type(outcome) for outcome in outcomes] == [UnusableCheckpoint] * 2 and outcomes[0] is not outcomes[1]
    assert checkpoint in str(outcomes[0])


def test_checkpoints_not_found_or_gone_from_disk(settings: Settings, session: Session) -> None:
    with pytest.raises(CheckpointNotFound, match="no checkpoint yet"):
        asyncio.run(FOUND.find(settings.DATABASE_URL, "latest"))
    with pytest.raises(CheckpointNotFound, match="no checkpoint with id 'nope'"):
        asyncio.run(FOUND.find(settings.DATABASE_URL, "nope"))
    found = asyncio.run(FOUND.find(settings.DATABASE_URL, save_checkpoint(settings, session)))
    assert found.classes == CLASSES and found.folder(settings.ARTIFACTS_DIR).is_dir()
    with pytest.raises(CheckpointNotFound, match="no files on disk"):
        found.folder(settings.ARTIFACTS_DIR / "elsewhere")


def photo(size: tuple[int, int], fmt: str) -> bytes:
    """A photo-like image (smooth shapes under fine noise, so that any extra resize shows) as `fmt` bytes."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / max(size)
    smooth = np.stack([np.sin(9 * x), np.cos(7 * y), np.sin(5 * (x + y))], axis=-1) * 80 + 128
    pixels = np.clip(smooth + rng.normal(0, 30, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def test_an_image_folder_checkpoint_gets_an_upload_as_training_got_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4:3 photos, a JPEG (decoded at its draft scale) and a PNG, for a model of 160 px inputs: /predict's
    input is the training pipeline's for the same file, pixel for pixel, and so is the normalized tensor.
    (They were shrunk to 256 px on the long side first, then resized again: other pixels, or upscaled.)"""
    from ml.checkpoints import save_checkpoint as ml_save
    from ml.data import load_dataset
    from ml.models import build_model
    from ml.normalization import Normalization
    from ml.predictor import Predictor
    from ml.specs import DatasetSpec, ModelSpec

    size, files = 160, {"a.jpg": photo((1280, 960), "JPEG"), "b.png": photo((400, 300), "PNG")}
    for split in ("train", "test"):
        (tmp_path / "data" / "photos" / split / "only").mkdir(parents=True)
        for name, data in files.items():
            (tmp_path / "data" / "photos" / split / "only" / name).write_bytes(data)
    bundle = load_dataset(DatasetSpec(name="image_folder", path="photos", image_size=size), tmp_path / "data")
    spec = {"name": "custom_resnet", "width": 4}
    manifest = {
        "model": spec,
        "in_channels": 3,
        "num_classes": 1,
        "image_size": size,
        "dataset": "image_folder",
        "classes": ["only"],
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "epoch": 1,
        "test_acc": 1.0,
    }
    folder = tmp_path / "checkpoint"
    ml_save(folder, model=build_model(ModelSpec(**spec), in_channels=3, num_classes=1).eval(), manifest=manifest)
    seen = []
    predict_many = Predictor.predict_many

    def spy(predictor: Predictor, queries: list, **kwargs: object) -> list:
        seen.extend(predictor._tensor(query.pixels) for query in queries)
        return predict_many(predictor, queries, **kwargs)

    monkeypatch.setattr(Predictor, "predict_many", spy)
    key = BatchKey(f"photos-{tmp_path.name}", gradcam=False, method="gradcam")
    (outcome,) = run_batch([Work(key=key, images=2, payload=ask(folder, *files.values()))])
    assert isinstance(outcome, list) and len(outcome) == 2
    training = Normalization.of(bundle.mean, bundle.std).normalize(torch.from_numpy(bundle.test.images.copy()))
    assert seen[0].shape == training.shape == (2, 3, size, size)
    torch.testing.assert_close(seen[0], training, atol=1e-6, rtol=0)
