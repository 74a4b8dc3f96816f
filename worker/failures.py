"""What a failed job's `error` says: a readable message for each way ml can fail, so the user
knows what to change. Anything else is a bug, reported with its type."""

from __future__ import annotations

import gc
import traceback
from typing import Any

import torch

# ValueError covers ml.data.DatasetError, ml.checkpoints.CheckpointError and bad specs.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FloatingPointError,
    torch.OutOfMemoryError,
    MemoryError,
    OSError,
)


def describe(exc: BaseException, *, epoch: int | None, params: dict[str, Any] | None = None) -> str:
    """The job's error message for `exc`, raised during `epoch` (if known) by the job of `params`."""
    if isinstance(exc, FloatingPointError):
        if str(exc).startswith("training diverged"):
            return str(exc)
        where = f" at epoch {epoch}" if epoch else ""
        return f"training diverged: loss became NaN/inf{where}; lower the learning rate ({exc})"
    if isinstance(exc, torch.OutOfMemoryError):
        return f"CUDA out of memory{_memory_settings(params or {})}: lower batch_size or width"
    if isinstance(exc, MemoryError):
        return "out of memory: lower batch_size, width or the dataset subset"
    if isinstance(exc, ValueError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        target = f" {exc.filename}" if exc.filename else ""
        return f"could not read or write files{target}: {exc.strerror or exc}"
    return f"internal error ({type(exc).__name__}): {exc}; this is a bug, please report it"


def _memory_settings(params: dict[str, Any]) -> str:
    """What the job ran with, " at batch_size 512, width 64", as far as its params say."""
    model = params.get("model")
    width = model.get("width") if isinstance(model, dict) else None
    named = [
        f"{name} {value}"
        for name, value in (("batch_size", params.get("batch_size")), ("width", width))
        if value is not None
    ]
    return f" at {', '.join(named)}" if named else ""


def release_memory(exc: BaseException) -> None:
    """After an out-of-memory error, free what the failed run holds and hand cached GPU memory back,
    so the next job can start. The traceback's frames keep the run's model, optimizer and batches
    alive (the exception is still being handled): clear them, collect, then empty the CUDA cache."""
    if not isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return
    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
