"""service.predictions without the router: batch keys, checkpoints found, batches run on a real
(tiny, random-weight) checkpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from api_support import png_bytes
from fastapi import HTTPException
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
