"""The prediction engine of the API: checkpoints found in the store, batches run on the model thread.

The predict route parses a request and hands it here: `FOUND.find` names the checkpoint (kept by id,
`latest` looked up every time), `Found.folder` its files, and `run_batch`, run by the batcher
(service.batching) on `MODEL_THREAD`, answers every request of a batch that shares a `BatchKey`.
Nothing here imports torch: `run_batch` loads service.predictor on the first prediction."""

from __future__ import annotations

import importlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from core import store
from core.db import Checkpoint, session_for
from service import telemetry
from service.batching import Outcome, Work
from service.uploads import Upload, decode_images

# Every torch call of the API process runs on this one thread. torch's OpenMP keeps a team of worker
# threads per calling thread, and once the teams together outnumber the cores their workers stop
# spin-waiting between layers and sleep: on 2 cores the model's share of a one-image GradCAM request
# took 15.3 ms instead of 10.0 ms when Starlette's threadpool handed requests to different threads.
# Forward passes are serialized by the predictor's lock anyway, so one thread costs no parallelism.
MODEL_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
FOUND_KEPT = 256  # checkpoint rows kept by id: more than an API serves at once, each a few strings


class CheckpointNotFound(LookupError):
    """No checkpoint by that id (or none at all for 'latest'), or its files are gone from disk."""


class UnusableCheckpoint(RuntimeError):
    """A checkpoint whose files are missing, malformed or do not fit its model."""


class NoTemperature(RuntimeError):
    """calibrated=true asked of a checkpoint without a fitted temperature (ml.calibration), saying why."""


@dataclass(frozen=True)
class BatchKey:
    """Which requests may share a forward pass: the same checkpoint, and the same kind of answer."""

    checkpoint_id: str
    gradcam: bool
    method: str  # the CAM method ("gradcam", "gradcam++"); one backward pass serves one method
    calibrated: bool = False  # probabilities of the logits divided by the fitted temperature


@dataclass
class Ask:
    """What one request asks of the model, with its undecoded uploads."""

    folder: Path
    uploads: list[Upload]
    topk: int
    target: str
    max_pixels: int
    device: str
    threads: int


def run_batch(batch: Sequence[Work]) -> list[Outcome]:
    """Runs on MODEL_THREAD: each request's uploads decoded (one image decoded in full at a time in the
    whole process) and fitted to the model's input as training fits an image folder's files, then one
    forward pass for all of them. A request whose images cannot be used gets its own 413/415; the
    others go on. A checkpoint that cannot be loaded answers every request with `UnusableCheckpoint`."""
    predictor = importlib.import_module("service.predictor")  # imports torch on the first prediction only
    began = time.perf_counter()
    key, first = batch[0].key, batch[0].payload
    assert isinstance(key, BatchKey) and isinstance(first, Ask), batch[0]
    try:
        model = predictor.load(key.checkpoint_id, first.folder, device=first.device, threads=first.threads)
    except UnusableCheckpoint as exc:
        return [UnusableCheckpoint(str(exc)) for _ in batch]  # one each: raised in each request's task
    if key.calibrated and model.temperature is None:
        why = f"checkpoint {key.checkpoint_id} has no fitted temperature: {model.uncalibrated_reason}"
        return [NoTemperature(why) for _ in batch]
    outcomes: list[Outcome | None] = [None] * len(batch)
    queries, answered = [], []
    for i, work in enumerate(batch):
        ask: Ask = work.payload
        try:
            images = decode_images(ask.uploads, max_pixels=ask.max_pixels, size=model.image_size, fit=model.fit)
            queries.append(model.query(images, topk=ask.topk, target=ask.target))
            answered.append(i)
        except HTTPException as exc:  # 413/415 from decoding
            outcomes[i] = exc
        except ValueError as exc:  # an image the model cannot take (e.g. a mode Pillow cannot convert)
            outcomes[i] = HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"cannot use the image: {exc}")
    results = model.predict_many(queries, gradcam=key.gradcam, method=key.method, calibrated=key.calibrated)
    seconds = time.perf_counter() - began
    telemetry.observe_batch(len(queries))
    for i, result in zip(answered, results):
        outcomes[i] = result
        telemetry.observe_prediction(len(result), gradcam=key.gradcam, seconds=seconds)
    return outcomes  # type: ignore[return-value]  # every place filled above


@dataclass(frozen=True)
class Found:
    """What a prediction needs of a checkpoint's row."""

    id: str
    classes: list[str]
    path: str

    def folder(self, artifacts_dir: Path) -> Path:
        """The checkpoint's folder under `artifacts_dir`; `CheckpointNotFound` if it left it or is gone."""
        root = artifacts_dir.resolve()
        folder = (root / self.path).resolve()
        if not folder.is_relative_to(root) or not folder.is_dir():
            raise CheckpointNotFound(f"checkpoint {self.id} has no files on disk any more")
        return folder


class FoundCheckpoints:
    """Checkpoints found by id, kept (the most recently used `size`): a checkpoint's id names one
    folder and class list for good (a redelivered job that registers its checkpoint again writes the
    same folder and classes; the predictor cache keeps the weights by id alone; a row is deleted only
    with its folder, DELETE /jobs/{id}, which `Found.folder` finds gone: a 404), so a request that
    names one seen before skips the store: a hop to the threadpool and an ORM query, under load a
    fifth of a batched request's cost besides the model. 'latest' is looked up every time: a new
    checkpoint is the latest at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._found: OrderedDict[tuple[str, str], Found] = OrderedDict()  # by (store, id); event loop only

    async def find(self, database_url: str, checkpoint: str) -> Found:
        """The checkpoint named `checkpoint` (an id, or 'latest') in the store at `database_url`;
        `CheckpointNotFound` if none."""
        found = self._found.get((database_url, checkpoint))
        if found is not None:
            self._found.move_to_end((database_url, checkpoint))
            return found
        found = await run_in_threadpool(find_checkpoint, database_url, checkpoint)
        self._found[database_url, found.id] = found
        while len(self._found) > self.size:
            self._found.popitem(last=False)
        return found


FOUND = FoundCheckpoints(FOUND_KEPT)


def find_checkpoint(database_url: str, checkpoint: str) -> Found:
    """The checkpoint's row, in one hop to the threadpool (SessionDep would take two more: its
    generator is entered and closed in the threadpool)."""
    with session_for(database_url) as session:
        row = _lookup(session, checkpoint)
        return Found(row.id, list(row.classes), row.path)


def _lookup(session: Session, checkpoint: str) -> Checkpoint:
    if checkpoint == "latest":
        row = store.latest_checkpoint(session)
        if row is None:
            raise CheckpointNotFound("no checkpoint yet: train a model first (POST /jobs/train)")
        return row
    row = store.get_checkpoint(session, checkpoint)
    if row is None:
        raise CheckpointNotFound(f"no checkpoint with id {checkpoint!r} (or use 'latest')")
    return row
