"""Datasets uploaded over HTTP: one archive in, an image folder that jobs train on by id out.

The archive is streamed to DATA_DIR/uploads/.incoming/ and unpacked there with its limits
(MAX_DATASET_BYTES, MAX_DATASET_UNPACKED_BYTES, MAX_DATASET_MEMBERS: 413, hostile members 422, not an
archive 415), all before the 202; the import then runs in the background (service.dataset_imports)."""

from __future__ import annotations

import math
import shutil
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from core import store
from core.archives import ArchiveLimits, ArchiveRefused, extract
from core.dataset_import import check_layout
from core.db import Dataset, new_id, session_for
from service import dataset_imports
from service.archive_upload import invalid, receive_archive
from service.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/datasets", tags=["datasets"])

MAX_NAME_CHARS = 100
TEST_FRACTION = (0.05, 0.5)  # of each class, for an archive of flat <class>/ folders
MAX_SEED = 2**31 - 1


class SkippedPublic(BaseModel):
    member: str = Field(description="the file's path inside the archive")
    reason: str


class UploadedDatasetPublic(BaseModel):
    id: str
    name: str
    status: Literal["importing", "ready", "failed"]
    classes: list[str] = Field(default_factory=list, description="the class folders' names, sorted")
    counts: dict[str, dict[str, int]] = Field(default_factory=dict, description='{"train": {class: n}, "test": ...}')
    image_size: list[int] | None = Field(default=None, description="[height, width], the median over its images")
    channels: int | None = Field(default=None, description="1 when every image is greyscale, else 3")
    mean: list[float] | None = Field(default=None, description="per channel, of the training images, in [0, 1]")
    std: list[float] | None = Field(default=None, description="per channel, of the training images")
    bytes: int | None = Field(default=None, description="of the images kept")
    sha256: str | None = Field(default=None, description="of its content: the same images give the same hash")
    skipped: list[SkippedPublic] = Field(default_factory=list, description="files not imported (the first 100)")
    skipped_count: int = 0
    progress: dict[str, int | str] | None = Field(
        default=None, description="while importing: done and total images, and when (`at`)"
    )
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None

    @classmethod
    def of(cls, dataset: Dataset) -> UploadedDatasetPublic:
        summary: dict[str, Any] = dict(dataset.summary or {})
        known = {key: summary[key] for key in cls.model_fields if key in summary}
        return cls(
            **known
            | {
                "id": dataset.id,
                "name": dataset.name,
                "status": dataset.status,
                "error": dataset.error,
                "created_at": dataset.created_at,
                "finished_at": dataset.finished_at,
            }
        )


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": ".zip, .tar or .tar.gz"},
                        "name": {"type": "string", "maxLength": MAX_NAME_CHARS},
                        "test_fraction": {"type": "number", "minimum": TEST_FRACTION[0], "maximum": TEST_FRACTION[1]},
                        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=UPLOAD_BODY,
    responses={
        413: {"description": "the archive, its members or its unpacked bytes pass their limits"},
        415: {"description": "not a zip or tar archive"},
        422: {
            "description": "a bad form field, a damaged archive, a hostile member (absolute, '..', a link, a "
            "device), or a layout without 2 classes that each have a file to train on",
        },
    },
)
async def upload_dataset(request: Request, response: Response, settings: SettingsDep) -> UploadedDatasetPublic:
    """Send an archive of train/<class>/ + test/<class>/ folders, or of <class>/ folders alone (then
    `test_fraction` of each class, drawn by `seed`, is the test set); answers `importing`, then GET
    it until `ready` or `failed`. Jobs train on it with {"name": "uploaded", "id": ...}."""
    incoming = dataset_imports.incoming_dir(settings.DATA_DIR)
    await run_in_threadpool(incoming.mkdir, parents=True, exist_ok=True)
    dataset_id = new_id()
    archive, extracted = incoming / f"{dataset_id}.archive", incoming / dataset_id
    form = await receive_archive(request, archive, max_bytes=settings.MAX_DATASET_BYTES)
    try:
        name, test_fraction, seed = _fields(form.fields, form.filename or "")
        limits = ArchiveLimits(
            max_members=settings.MAX_DATASET_MEMBERS, max_unpacked_bytes=settings.MAX_DATASET_UNPACKED_BYTES
        )
        await run_in_threadpool(extract, archive, extracted, limits=limits)
        await run_in_threadpool(check_layout, extracted)
    except ArchiveRefused as exc:  # DatasetRefused included: nothing is kept
        await run_in_threadpool(shutil.rmtree, extracted, ignore_errors=True)
        raise HTTPException(exc.status, exc.detail) from exc
    finally:
        await run_in_threadpool(archive.unlink, missing_ok=True)
    dataset = await run_in_threadpool(_create, settings.DATABASE_URL, dataset_id, name)
    dataset_imports.submit(
        settings.DATABASE_URL, settings.DATA_DIR, dataset_id, extracted, test_fraction=test_fraction, seed=seed
    )
    response.headers["Location"] = f"/datasets/{dataset_id}"
    return UploadedDatasetPublic.of(dataset)


def _create(database_url: str, dataset_id: str, name: str) -> Dataset:
    with session_for(database_url) as session:
        return store.create_dataset(session, name=name, dataset_id=dataset_id)


def _fields(fields: dict[str, str], filename: str) -> tuple[str, float, int]:
    """(name, test_fraction, seed) from the form, each checked; the name defaults to the archive's."""
    stem = filename.rsplit("/", 1)[-1].split(".", 1)[0]
    name = (fields.get("name") or stem or "dataset").strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise invalid("name", f"name must be 1-{MAX_NAME_CHARS} characters; got {len(name)}")
    try:
        test_fraction = float(fields.get("test_fraction", "0.2"))
    except ValueError:
        raise invalid("test_fraction", "test_fraction must be a number") from None
    low, high = TEST_FRACTION
    if not (math.isfinite(test_fraction) and low <= test_fraction <= high):
        raise invalid("test_fraction", f"test_fraction must be between {low} and {high}; got {test_fraction}")
    seed_text = fields.get("seed", "0").strip()
    if not seed_text.isdigit() or int(seed_text) > MAX_SEED:
        raise invalid("seed", f"seed must be an integer from 0 to {MAX_SEED}; got {seed_text!r}")
    return name, test_fraction, int(seed_text)


@router.get("/{dataset_id}", responses={404: {"description": "no uploaded dataset with this id"}})
def get_dataset(dataset_id: str, session: SessionDep) -> UploadedDatasetPublic:
    return UploadedDatasetPublic.of(_dataset_or_404(session, dataset_id))


@router.get(
    "/{dataset_id}/samples.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"description": "no such dataset, or not ready"}},
)
def get_samples(dataset_id: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """A grid of a few training images of each class, a row per class."""
    dataset = _dataset_or_404(session, dataset_id)
    path = dataset_imports.uploads_dir(settings.DATA_DIR) / dataset.id / "samples.png"
    if dataset.status != "ready" or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id!r} is {dataset.status!r}: no samples")
    return FileResponse(path, media_type="image/png")


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such dataset"}, 409: {"description": "a queued or running job uses it"}},
)
def delete_dataset(dataset_id: str, session: SessionDep, settings: SettingsDep) -> Response:
    """Removes the dataset and its files; checkpoints trained on it keep predicting."""
    try:
        dataset = store.delete_dataset(session, dataset_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except store.DatasetInUse as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    shutil.rmtree(dataset_imports.uploads_dir(settings.DATA_DIR) / dataset.id, ignore_errors=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _dataset_or_404(session: SessionDep, dataset_id: str) -> Dataset:
    dataset = store.get_dataset(session, dataset_id)
    if dataset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no uploaded dataset with id {dataset_id!r}")
    return dataset
