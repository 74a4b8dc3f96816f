"""Prediction (and GradCAM) with a checkpoint on uploaded images."""

from __future__ import annotations

import importlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.db import Checkpoint, session_for
from service import telemetry
from service.admission import invalid
from service.batching import Outcome, PredictBatcher, Work
from service.deps import SettingsDep
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
    413: {
        "description": "a file is larger than MAX_UPLOAD_BYTES, the body than MAX_PREDICT_BYTES, an image "
        "has too many pixels, or the images together more than MAX_PREDICT_PIXELS"
    },
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
    """Classify each uploaded image (`file`, or several `files`), resized to the checkpoint's input.
    Concurrent requests for one checkpoint share the model's forward pass (service.batching)."""
    batcher: PredictBatcher = request.app.state.predict_batcher
    async with batcher.arrival() as submit:
        row = await FOUND.find(settings.DATABASE_URL, checkpoint)
        if target != "pred" and target not in row.classes:
            message = f"unknown target {target!r}; expected 'pred' or one of {row.classes}"
            raise invalid(("query", "target"), message, target)
        folder = _folder(settings, row)
        uploads = await read_uploads(request, max_bytes=settings.MAX_UPLOAD_BYTES)
        ask = Ask(
            row.id,
            folder,
            uploads,
            topk=topk,
            target=target,
            max_pixels=settings.MAX_PREDICT_PIXELS,
            device=settings.PREDICT_DEVICE,
            threads=settings.PREDICT_THREADS,
        )
        client = (request.client.host, request.client.port) if request.client else None
        results = await submit(Work(key=(row.id, gradcam, method), images=len(uploads), payload=ask, client=client))
    predictions = [{"filename": upload.filename, **result} for upload, result in zip(uploads, results)]
    return PredictionsPublic.model_validate({"checkpoint_id": row.id, "predictions": predictions})


@dataclass
class Ask:
    """What one request asks of the model, with its undecoded uploads."""

    checkpoint_id: str
    folder: Path
    uploads: list[Upload]
    topk: int
    target: str
    max_pixels: int
    device: str
    threads: int


def run_batch(batch: Sequence[Work]) -> list[Outcome]:
    """Runs on MODEL_THREAD: each request's uploads decoded (one image decoded in full at a time in the
    whole process) and made ready for the model, then one forward pass for all of them. A request
    whose images cannot be used gets its own 413/415; the others go on."""
    predictor = importlib.import_module("service.predictor")  # imports torch on the first prediction only
    began = time.perf_counter()
    first: Ask = batch[0].payload
    _, gradcam, method = batch[0].key
    try:
        model = predictor.load(first.checkpoint_id, first.folder, device=first.device, threads=first.threads)
    except predictor.UnusableCheckpoint as exc:
        return [invalid(("query", "checkpoint"), str(exc), first.checkpoint_id) for _ in batch]
    outcomes: list[Outcome | None] = [None] * len(batch)
    queries, answered = [], []
    for i, work in enumerate(batch):
        ask: Ask = work.payload
        try:
            images = decode_images(ask.uploads, max_pixels=ask.max_pixels)
            queries.append(model.query(images, topk=ask.topk, target=ask.target))
            answered.append(i)
        except HTTPException as exc:  # 413/415 from decoding
            outcomes[i] = exc
        except ValueError as exc:  # an image the model cannot take (e.g. a mode Pillow cannot convert)
            outcomes[i] = HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"cannot use the image: {exc}")
    results = model.predict_many(queries, gradcam=gradcam, method=method)
    seconds = time.perf_counter() - began
    telemetry.observe_batch(len(queries))
    for i, result in zip(answered, results):
        outcomes[i] = result
        telemetry.observe_prediction(len(result), gradcam=gradcam, seconds=seconds)
    return outcomes  # type: ignore[return-value]  # every place filled above


@dataclass(frozen=True)
class Found:
    """What a prediction needs of a checkpoint's row."""

    id: str
    classes: list[str]
    path: str


class FoundCheckpoints:
    """Checkpoints found by id, kept (the most recently used FOUND_KEPT): a checkpoint's id names one
    folder and class list for good (rows are never deleted, and a redelivered job that registers its
    checkpoint again writes the same folder and classes; the predictor cache keeps the weights by id
    alone), so a request that names one seen before skips the store: a hop to the threadpool and an
    ORM query, under load a fifth of a batched request's cost besides the model. 'latest' is looked
    up every time: a new checkpoint is the latest at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._found: OrderedDict[tuple[str, str], Found] = OrderedDict()  # by (store, id); event loop only

    async def find(self, database_url: str, checkpoint: str) -> Found:
        """The checkpoint named `checkpoint` (an id, or 'latest') in the store at `database_url`; 404 if none."""
        found = self._found.get((database_url, checkpoint))
        if found is not None:
            self._found.move_to_end((database_url, checkpoint))
            return found
        found = await run_in_threadpool(_find_checkpoint, database_url, checkpoint)
        self._found[database_url, found.id] = found
        while len(self._found) > self.size:
            self._found.popitem(last=False)
        return found


FOUND_KEPT = 256
FOUND = FoundCheckpoints(FOUND_KEPT)


def _find_checkpoint(database_url: str, checkpoint: str) -> Found:
    """The checkpoint's row, in one hop to the threadpool (SessionDep would take two more: its
    generator is entered and closed in the threadpool)."""
    with session_for(database_url) as session:
        row = _lookup(session, checkpoint)
        return Found(row.id, list(row.classes), row.path)


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


def _folder(settings: Settings, row: Found) -> Path:
    root = settings.ARTIFACTS_DIR.resolve()
    folder = (root / row.path).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"checkpoint {row.id} has no files on disk any more")
    return folder
