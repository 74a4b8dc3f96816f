"""Prediction (and GradCAM) with a checkpoint on uploaded images: the HTTP side of service.predictions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status

from service.admission import invalid
from service.batching import PredictBatcher, Work
from service.deps import SettingsDep
from service.limits import PredictGate, body_deadline
from service.predictions import FOUND, Ask, BatchKey, CheckpointNotFound, NoTemperature, UnusableCheckpoint
from service.schemas import PredictionsPublic
from service.uploads import OPENAPI_BODY, read_uploads

router = APIRouter(tags=["predict"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown checkpoint, or none yet with checkpoint=latest"},
    413: {
        "description": "a file is larger than MAX_UPLOAD_BYTES, the body than MAX_PREDICT_BYTES, an image "
        "has too many pixels, or the images together more than MAX_PREDICT_PIXELS"
    },
    415: {"description": "a file is not an image, is empty or is truncated"},
    422: {
        "description": "no image in the form field 'file' (or 'files'): no body, or not multipart/form-data; "
        "calibrated=true for a checkpoint without a fitted temperature (its run held out no validation split)"
    },
}


@router.post("/predict", openapi_extra=OPENAPI_BODY, responses=RESPONSES)
async def predict(
    request: Request,
    settings: SettingsDep,
    checkpoint: Annotated[str, Query(description="a checkpoint id, or 'latest' for the newest")] = "latest",
    gradcam: Annotated[bool, Query(description="also render a GradCAM overlay per image")] = False,
    topk: Annotated[
        int, Query(ge=1, le=1000, description="classes to list per image (1-1000, capped at the class count)")
    ] = 3,
    method: Annotated[Literal["gradcam", "gradcam++"], Query(description="CAM method")] = "gradcam",
    target: Annotated[str, Query(description="'pred' (the predicted class) or a class name")] = "pred",
    calibrated: Annotated[
        bool, Query(description="probabilities of the logits divided by the checkpoint's fitted temperature")
    ] = False,
) -> PredictionsPublic:
    """Classify each uploaded image (`file`, or several `files`), resized to the checkpoint's input.
    Concurrent requests for one checkpoint share the model's forward pass (service.batching)."""
    batcher: PredictBatcher = request.app.state.predict_batcher
    gate: PredictGate = request.app.state.predict_gate
    client = (request.client.host, request.client.port) if request.client else None
    uploads_of = request.app.state.client_uploads
    if request.app.state.predicting is not None:
        request.app.state.predicting.note()  # a training worker on these cores yields one (YIELD_TO_PREDICTIONS)
    with uploads_of.held(client[0] if client else "-", per_client=settings.MAX_UPLOADS_PER_CLIENT):
        async with batcher.arrival() as submit:
            async with body_deadline(settings.PREDICT_BODY_SECONDS):  # no prediction slot held meanwhile
                uploads = await read_uploads(request, max_bytes=settings.MAX_UPLOAD_BYTES)
            async with gate.slot():
                try:
                    found = await FOUND.find(settings.DATABASE_URL, checkpoint)
                    if target != "pred" and target not in found.classes:
                        message = f"unknown target {target!r}; expected 'pred' or one of {found.classes}"
                        raise invalid(("query", "target"), message, target)
                    folder = found.folder(settings.ARTIFACTS_DIR)
                except CheckpointNotFound as exc:
                    raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
                ask = Ask(
                    folder,
                    uploads,
                    topk=topk,
                    target=target,
                    max_pixels=settings.MAX_PREDICT_PIXELS,
                    device=settings.PREDICT_DEVICE,
                    threads=settings.PREDICT_THREADS,
                )
                key = BatchKey(found.id, gradcam=gradcam, method=method, calibrated=calibrated)
                try:
                    results = await submit(Work(key=key, images=len(uploads), payload=ask, client=client))
                except UnusableCheckpoint as exc:
                    raise invalid(("query", "checkpoint"), str(exc), found.id) from None
                except NoTemperature as exc:
                    raise invalid(("query", "calibrated"), str(exc), calibrated) from None
    predictions = [{"filename": upload.filename, **result} for upload, result in zip(uploads, results)]
    temperature = results[0].get("temperature") if calibrated and results else None  # the predictor's, applied
    return PredictionsPublic.model_validate(
        {"checkpoint_id": found.id, "calibrated": calibrated, "temperature": temperature, "predictions": predictions}
    )
