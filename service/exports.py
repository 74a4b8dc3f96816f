"""Checkpoint exports for the API: the checkpoint found in the store, ml.export run on the model thread.

Nothing here imports torch: `export_file` loads ml.export on MODEL_THREAD on the first export, and the
file it writes is kept next to the checkpoint (ml.export caches it by the weights' hash)."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Literal

from fastapi.concurrency import run_in_threadpool

from core import store
from core.db import session_for
from service.predictions import MODEL_THREAD, CheckpointNotFound, Found, UnusableCheckpoint

# ml.export.FORMATS, which imports torch (tests/ml/test_export.py holds the two together)
ExportFormat = Literal["onnx", "torchscript"]


async def find(database_url: str, checkpoint_id: str) -> Found:
    """The checkpoint with this id; `CheckpointNotFound` if none."""
    found = await run_in_threadpool(_find, database_url, checkpoint_id)
    if found is None:
        raise CheckpointNotFound(f"no checkpoint with id {checkpoint_id!r}")
    return found


def _find(database_url: str, checkpoint_id: str) -> Found | None:
    with session_for(database_url) as session:
        row = store.get_checkpoint(session, checkpoint_id)
        return None if row is None else Found(row.id, list(row.classes), row.path)


async def export_file(found: Found, folder: Path, fmt: ExportFormat) -> Path:
    """The checkpoint's export as `fmt`, written on MODEL_THREAD (where every torch call of the API
    runs) unless already there; `UnusableCheckpoint` if its files cannot be loaded."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(MODEL_THREAD, _export, found.id, folder, fmt)


def _export(checkpoint_id: str, folder: Path, fmt: str) -> Path:
    """Runs on MODEL_THREAD: imports torch on the first export."""
    export = importlib.import_module("ml.export")
    checkpoints = importlib.import_module("ml.checkpoints")
    try:
        path: Path = export.export_checkpoint(folder, fmt, checkpoint_id=checkpoint_id)
    except checkpoints.CheckpointError as exc:
        raise UnusableCheckpoint(f"checkpoint {checkpoint_id} cannot be exported: {exc}") from exc
    return path
