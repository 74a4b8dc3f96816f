"""A training job's probe images explained epoch by epoch: their GradCAM maps, predictions and
confidences as ml.probes recorded them in the job's probes/ folder, served while the job runs."""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from PIL import Image

from core import store
from ml.probe_files import FOLDER, SET_FILE, epoch_file, recorded_epochs
from ml.specs import MAX_EPOCHS
from service.deps import SessionDep, SettingsDep
from service.errors import Responses
from service.schemas import ExplanationProbePublic, ExplanationsPublic

router = APIRouter(prefix="/jobs/{job_id}", tags=["explanations"])

CACHED_FILES = 64  # parsed and encoded npz files kept: ~60 KB of data URLs each
NO_PROBES: Responses = {
    404: {"description": "no such job, or it has no explanations: an LR-finder job, or no epoch finished yet"}
}
NO_EPOCH: Responses = {422: {"description": "an epoch that was not recorded; the message names those that were"}}


def _png(pixels: np.ndarray) -> str:
    """A uint8 image (H, W) or (H, W, C) as a PNG data URL."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def jet(maps: np.ndarray) -> np.ndarray:
    """uint8 maps (..., H, W) coloured with OpenCV's COLORMAP_JET, as the GradCAM overlays are: (..., H, W, 3) RGB."""
    flat = np.ascontiguousarray(maps, dtype=np.uint8).reshape(-1, 1)
    coloured: np.ndarray = cv2.cvtColor(cv2.applyColorMap(flat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return coloured.reshape(*maps.shape, 3)


@lru_cache(maxsize=CACHED_FILES)
def _probe_set(path: str, mtime_ns: int) -> tuple[list[int], list[int], list[str], list[str]]:
    """(indices, labels, class names, image data URLs) of probes/set.npz, once per version of the file."""
    with np.load(path) as saved:
        images = [_png(image) for image in saved["images"]]
        return saved["indices"].tolist(), saved["labels"].tolist(), saved["classes"].tolist(), images


@lru_cache(maxsize=CACHED_FILES)
def _epoch(path: str, mtime_ns: int) -> tuple[list[int], list[float], list[float], list[str], list[str]]:
    """(predicted, confidence, true probability, map and heat-map data URLs) of one epoch's file."""
    with np.load(path) as saved:
        maps = saved["maps"]
        return (
            saved["predicted"].tolist(),
            [round(float(p), 4) for p in saved["confidence"]],
            [round(float(p), 4) for p in saved["true_probability"]],
            [_png(m) for m in maps],
            [_png(m) for m in jet(maps)],
        )


def _stamp(path: Path) -> tuple[str, int]:
    return str(path), path.stat().st_mtime_ns


@router.get("/explanations", responses=NO_PROBES | NO_EPOCH)
def get_explanations(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    epoch: Annotated[
        int | None, Query(ge=1, le=MAX_EPOCHS, description="a recorded epoch; none: the latest recorded")
    ] = None,
) -> ExplanationsPublic:
    """The probe images of a training job (two test images a class, or the spec's probe_indices) with the
    GradCAM map of the class predicted at `epoch`, that prediction and its confidence."""
    job = store.get_job(session, job_id)
    if job is None:
        raise store.JobNotFound(job_id)
    root = settings.ARTIFACTS_DIR.resolve()
    folder = (root / job.id / FOLDER).resolve()
    epochs = recorded_epochs(folder) if folder.is_relative_to(root) else []
    if not epochs:
        why = (
            "an LR-finder job explains nothing"
            if job.kind != "train"
            else f"it is {job.status} and no epoch has finished with probes recorded"
        )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} has no explanations: {why}")
    chosen = epochs[-1] if epoch is None else epoch
    if chosen not in epochs:
        message = f"epoch {epoch} has no explanations; this job's recorded epochs are {_ranges(epochs)}"
        raise RequestValidationError([{"type": "enum", "loc": ("query", "epoch"), "msg": message, "input": epoch}])
    indices, labels, classes, images = _probe_set(*_stamp(folder / SET_FILE))
    predicted, confidence, true_probability, maps, heatmaps = _epoch(*_stamp(epoch_file(folder, chosen)))
    return ExplanationsPublic(
        job_id=job.id,
        epoch=chosen,
        epochs=epochs,
        method="gradcam",
        test_time_flip=bool(job.params.get("test_time_flip")),
        probes=[
            ExplanationProbePublic(
                index=indices[i],
                true_class=classes[labels[i]],
                pred_class=classes[predicted[i]],
                confidence=confidence[i],
                true_probability=true_probability[i],
                image=images[i],
                map=maps[i],
                heatmap=heatmaps[i],
            )
            for i in range(len(indices))
        ],
    )


def _ranges(epochs: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
