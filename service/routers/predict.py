"""Prediction (and GradCAM) with a checkpoint on uploaded images."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from service import store
from service.admission import invalid
from service.config import Settings, SettingsDep
from service.db import Checkpoint
from service.deps import SessionDep
from service.schemas import PredictionsPublic
from service.uploads import OPENAPI_BODY, Upload, decode_image, read_uploads

router = APIRouter(tags=["predict"])

RESPONSES = {
    404: {"description": "unknown checkpoint, or none yet with checkpoint=latest"},
    413: {"description": "a file is larger than MAX_UPLOAD_BYTES (or has too many pixels)"},
    415: {"description": "a file is not an image, is empty or is truncated"},
}


@router.post("/predict", openapi_extra=OPENAPI_BODY, responses=RESPONSES)
async def predict(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    checkpoint: Annotated[str, Query(description="a checkpoint id, or 'latest' for the newest")] = "latest",
    gradcam: Annotated[bool, Query(description="also render a GradCAM overlay per image")] = False,
    topk: Annotated[int, Query(ge=1, description="classes to list per image (capped at the class count)")] = 3,
    method: Annotated[Literal["gradcam", "gradcam++"], Query(description="CAM method")] = "gradcam",
    target: Annotated[str, Query(description="'pred' (the predicted class) or a class name")] = "pred",
) -> PredictionsPublic:
    """Classify each uploaded image (`file`, or several `files`), resized to the checkpoint's input."""
    row = await run_in_threadpool(_find_checkpoint, session, checkpoint)
    if target != "pred" and target not in row.classes:
        message = f"unknown target {target!r}; expected 'pred' or one of {row.classes}"
        raise invalid(("query", "target"), message, target)
    folder = _folder(settings, row)
    uploads = await read_uploads(request, max_bytes=settings.MAX_UPLOAD_BYTES)
    predictor = await run_in_threadpool(importlib.import_module, "service.predictor")  # torch: first use only
    try:  # decoding and the model in one worker thread: each hop to the threadpool costs a context switch
        results = await run_in_threadpool(
            _decode_and_predict, predictor, row.id, folder, uploads, device=settings.PREDICT_DEVICE, topk=topk,
            gradcam=gradcam, method=method, target=target,
        )
    except predictor.UnusableCheckpoint as exc:
        raise invalid(("query", "checkpoint"), str(exc), checkpoint) from exc
    except ValueError as exc:  # an image the model cannot take (e.g. a mode Pillow cannot convert)
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"cannot use the image: {exc}") from exc
    predictions = [{"filename": upload.filename, **result} for upload, result in zip(uploads, results)]
    return PredictionsPublic.model_validate({"checkpoint_id": row.id, "predictions": predictions})


def _decode_and_predict(predictor: ModuleType, checkpoint_id: str, folder: Path, uploads: list[Upload],
                        **options: Any) -> list[dict[str, Any]]:
    images = [decode_image(upload) for upload in uploads]
    return predictor.predict(checkpoint_id, folder, images, **options)


def _find_checkpoint(session: Session, checkpoint: str) -> Checkpoint:
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
