"""Uploaded datasets after their archive is unpacked: the import (decode every image, statistics, the
train/test folders a worker reads) runs on one background thread of the API process, so it never
waits behind a training job and never blocks the event loop; its end is written to the store.

Files: DATA_DIR/uploads/.incoming/<id>/ while unpacked, then DATA_DIR/uploads/<id>/ (train/<class>/*,
test/<class>/*, samples.png). Every API process and worker must see the same DATA_DIR."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from core import store
from core.archives import ArchiveRefused
from core.dataset_import import import_folder
from core.db import session_for, utcnow
from ml.data import fit_image
from ml.specs import UPLOADS_FOLDER

logger = logging.getLogger(__name__)

INCOMING = ".incoming"  # under DATA_DIR/uploads: archives as they arrive and their unpacked members
SAMPLES_PER_CLASS = 8
SAMPLE_SIDE = 64  # px of one tile of samples.png
GAP = 2  # px between tiles
LABEL_WIDTH = 120  # px of the class-name column
LABEL_FONT_PX = 18  # the class names' size: readable where the page shows the grid at half its width
PROGRESS_SECONDS = 1.0  # at most one progress write a second
STALE_SECONDS = 600  # an import silent this long is taken for dead (a progress write comes every ~100 images)
LEFTOVER_SECONDS = 86_400  # an unpacked archive this old in the incoming folder belongs to no request

IMPORTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-import")


def uploads_dir(data_dir: Path) -> Path:
    return data_dir / UPLOADS_FOLDER


def incoming_dir(data_dir: Path) -> Path:
    return uploads_dir(data_dir) / INCOMING


def submit(
    database_url: str, data_dir: Path, dataset_id: str, extracted: Path, *, test_fraction: float, seed: int
) -> Future[None]:
    return IMPORTS.submit(run_import, database_url, data_dir, dataset_id, extracted, test_fraction, seed)


def run_import(
    database_url: str, data_dir: Path, dataset_id: str, extracted: Path, test_fraction: float, seed: int
) -> None:
    """Imports `extracted` as dataset `dataset_id` and records the end: `ready` with the summary, or
    `failed` with the reason. Leaves no files behind on failure, nor when the dataset was deleted
    meanwhile; the unpacked folder is always removed."""
    dest = uploads_dir(data_dir) / dataset_id
    summary, error = None, None
    try:
        summary = import_folder(
            extracted, dest, test_fraction=test_fraction, seed=seed, progress=_progress(database_url, dataset_id)
        ).to_dict()
        write_samples(dest, dest / "samples.png")
        for folder in (dest, *(p for p in dest.rglob("*") if p.is_dir())):
            folder.chmod(0o755)  # created private; workers may run as another user on a shared DATA_DIR
    except ArchiveRefused as exc:
        error = exc.detail
    except Exception as exc:  # a bug or a full disk: the dataset says so, the API keeps serving
        logger.exception("dataset %s: the import failed", dataset_id)
        error = f"the import failed: {type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(extracted, ignore_errors=True)
    with session_for(database_url) as session:
        kept = store.finish_dataset(session, dataset_id, summary=summary, error=error)
    if error is not None or not kept:
        shutil.rmtree(dest, ignore_errors=True)


def fail_interrupted(database_url: str, data_dir: Path) -> list[str]:
    """Imports that gave no sign of life for STALE_SECONDS are failed and their files removed (their API
    process stopped; an import is never resumed: the user uploads again), and unpacked archives left
    in the incoming folder for a day are removed. The reconciler's holder runs it on every pass."""
    now = utcnow()
    with session_for(database_url) as session:
        stale = store.fail_interrupted_imports(session, quiet_since=now - timedelta(seconds=STALE_SECONDS))
    for dataset_id in stale:
        shutil.rmtree(uploads_dir(data_dir) / dataset_id, ignore_errors=True)
    incoming = incoming_dir(data_dir)
    for leftover in incoming.iterdir() if incoming.is_dir() else []:
        if time.time() - leftover.stat().st_mtime > LEFTOVER_SECONDS:
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    return stale


def _progress(database_url: str, dataset_id: str) -> Callable[[int, int], None]:
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last < PROGRESS_SECONDS and done < total:
            return
        last = time.monotonic()
        with session_for(database_url) as session:
            store.dataset_progress(session, dataset_id, {"done": done, "total": total})

    return report


def _fitted(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """`text`, or as much of it as fits in `width` px followed by an ellipsis."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def write_samples(folder: Path, out: Path) -> Path:
    """A grid of up to SAMPLES_PER_CLASS training images of each class, one row per class with its
    name: what GET /datasets/{id}/samples.png serves."""
    classes = sorted(d.name for d in (folder / "train").iterdir() if d.is_dir())
    step = SAMPLE_SIDE + GAP
    grid = Image.new("RGB", (LABEL_WIDTH + SAMPLES_PER_CLASS * step, len(classes) * step), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=LABEL_FONT_PX)
    for row, name in enumerate(classes):
        top = row * step
        draw.text(
            (4, top + SAMPLE_SIDE // 2), _fitted(name, font, LABEL_WIDTH - 8), fill="black", font=font, anchor="lm"
        )
        files = sorted(p for p in (folder / "train" / name).iterdir() if p.is_file())[:SAMPLES_PER_CLASS]
        for column, path in enumerate(files):
            with Image.open(path) as image:
                image.draft("RGB", (SAMPLE_SIDE, SAMPLE_SIDE))
                tile = fit_image(image, SAMPLE_SIDE)  # as training sees it: upright, alpha on white, 16-bit scaled
            grid.paste(tile, (LABEL_WIDTH + column * step, top))
    grid.save(out, optimize=False)
    return out
