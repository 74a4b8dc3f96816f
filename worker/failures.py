"""What a failed job's `error` says: a readable message for each way ml can fail, so the user
knows what to change. Anything else is a bug, reported with its type."""

from __future__ import annotations

import torch

# ValueError covers ml.data.DatasetError, ml.checkpoints.CheckpointError and bad specs.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FloatingPointError,
    torch.OutOfMemoryError,
    MemoryError,
    OSError,
)


def describe(exc: BaseException, *, epoch: int | None) -> str:
    """The job's error message for `exc`, raised during `epoch` (if known)."""
    if isinstance(exc, FloatingPointError):
        if str(exc).startswith("training diverged"):
            return str(exc)
        where = f" at epoch {epoch}" if epoch else ""
        return f"training diverged: loss became NaN/inf{where}; lower the learning rate ({exc})"
    if isinstance(exc, torch.OutOfMemoryError):
        return "CUDA out of memory: lower batch_size or width"
    if isinstance(exc, MemoryError):
        return "out of memory: lower batch_size, width or the dataset subset"
    if isinstance(exc, ValueError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        target = f" {exc.filename}" if exc.filename else ""
        return f"could not read or write files{target}: {exc.strerror or exc}"
    return f"internal error ({type(exc).__name__}): {exc}; this is a bug, please report it"


def release_memory(exc: BaseException) -> None:
    """After an out-of-memory error, hand cached GPU memory back so the next job can start."""
    if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()
