"""Prediction (and GradCAM) with a checkpoint on uploaded images."""

from __future__ import annotations

import asyncio
import functools
import importlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service import store, telemetry
from service.admission import invalid
from service.config import Settings, SettingsDep
from service.db import Checkpoint, session_for
from service.schemas import PredictionsPublic
from service.uploads import OPENAPI_BODY, Upload, decode_images, read_uploads

router = APIRouter(tags=["predict"])

# Every torch call of the API process runs on this one thread. torch's OpenMP keeps a team of worker
# threads per calling thread, and once the teams together outnumber the cores their workers stop
# spin-waiting between layers and sleep: on 2 cores the model's share of a one-image GradCAM request
# took 15.3 ms instead of 10.0 ms when Starlette's threadpool handed requests to different threads.
# Forward passes are serialized by the predictor's lock anyway, so one thread costs no parallelism.
MODEL_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

RESPONSES = {
    404: {"description": "unknown checkpoint, or none yet with checkpoint=latest"},
    413: {"description": "a file is larger than MAX_UPLOAD_BYTES, the body than MAX_PREDICT_BYTES, an image "
          "has too many pixels, or the images together more than MAX_PREDICT_PIXELS"},
    415: {"description": "a file is not an image, is empty or is truncated"},
    422: {"description": "no image in the form field 'file' (or 'files'): no body, or not multipart/form-data"},
}


@router.post("/predict", openapi_extra=OPENAPI_BODY, responses=RESPONSES)
async def predict(
    request: Request,
    settings: SettingsDep,
    checkpoint: Annotated[str, Query(description="a checkpoint id, or 'latest' for the newest")] = "latest",
    gradcam: Annotated[bool, Query(description="also render a GradCAM overlay per image")] = False,
    topk: Annotated[int, Query(ge=1, description="classes to list per image (capped at the class count)")] = 3,
    method: Annotated[Literal["gradcam", "gradcam++"], Query(description="CAM method")] = "gradcam",
    target: Annotated[str, Query(description="'pred' (the predicted class) or a class name")] = "pred",
) -> PredictionsPublic:
    """Classify each uploaded image (`file`, or several `files`), resized to the checkpoint's input."""
    row = await run_in_threadpool(_find_checkpoint, settings.DATABASE_URL, checkpoint)
    if target != "pred" and target not in row.classes:
        message = f"unknown target {target!r}; expected 'pred' or one of {row.classes}"
        raise invalid(("query", "target"), message, target)
    folder = _folder(settings, row)
    uploads = await read_uploads(request, max_bytes=settings.MAX_UPLOAD_BYTES)
    work = functools.partial(_decode_and_predict, row.id, folder, uploads, max_pixels=settings.MAX_PREDICT_PIXELS,
                             device=settings.PREDICT_DEVICE,
                             threads=settings.PREDICT_THREADS, topk=topk, gradcam=gradcam, method=method,
                             target=target)  # fmt: skip
    results = await asyncio.get_running_loop().run_in_executor(MODEL_THREAD, work)
    predictions = [{"filename": upload.filename, **result} for upload, result in zip(uploads, results)]
    return PredictionsPublic.model_validate({"checkpoint_id": row.id, "predictions": predictions})


def _decode_and_predict(
    checkpoint_id: str, folder: Path, uploads: list[Upload], *, max_pixels: int, **options: Any
) -> list[dict[str, Any]]:
    """Runs on MODEL_THREAD: decoding and the model in one hop (each hop costs a context switch), and
    one image decoded in full at a time in the whole process."""
    predictor = importlib.import_module("service.predictor")  # imports torch on the first prediction only
    began = time.perf_counter()
    images = decode_images(uploads, max_pixels=max_pixels)
    try:
        results = predictor.predict(checkpoint_id, folder, images, **options)
        telemetry.observe_prediction(len(images), gradcam=options["gradcam"], seconds=time.perf_counter() - began)
        return results
    except predictor.UnusableCheckpoint as exc:
        raise invalid(("query", "checkpoint"), str(exc), checkpoint_id) from exc
    except ValueError as exc:  # an image the model cannot take (e.g. a mode Pillow cannot convert)
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"cannot use the image: {exc}") from exc


def _find_checkpoint(database_url: str, checkpoint: str) -> Checkpoint:
    """The checkpoint's row, in one hop to the threadpool (SessionDep would take two more: its
    generator is entered and closed in the threadpool)."""
    with session_for(database_url) as session:
        return _lookup(session, checkpoint)


def _lookup(session: Session, checkpoint: str) -> Checkpoint:
    if checkpoint == "latest":
        row = store.latest_checkpoint(session)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no checkpoint yet: train a model first (POST /jobs/train)")
        return row
    row = store.get_checkpoint(session, checkpoint)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no checkpoint with id {checkpoint!r} (or use 'latest')")
    return row


def _folder(settings: Settings, row: Checkpoint) -> Path:
    root = settings.ARTIFACTS_DIR.resolve()
    folder = (root / row.path).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"checkpoint {row.id} has no files on disk any more")
    return folder
