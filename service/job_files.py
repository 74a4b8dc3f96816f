"""A deleted job's files: its folder under ARTIFACTS_DIR and the artifact files and checkpoint
folders its rows named, never anything outside ARTIFACTS_DIR nor another job's folder."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)


def remove_job_files(artifacts_dir: Path, job_id: str, paths: Iterable[str]) -> list[Path]:
    """Removes `<ARTIFACTS_DIR>/<job_id>/` and each of `paths` (relative to ARTIFACTS_DIR) that
    resolves inside ARTIFACTS_DIR (links followed: one that points out is left alone) and is neither
    ARTIFACTS_DIR itself nor another job's top-level folder. Returns what was removed."""
    root = artifacts_dir.resolve()
    removed = []
    for relative in [job_id, *paths]:
        target = (root / relative).resolve()
        inside = target.is_relative_to(root) and target != root
        if not inside or (target.parent == root and target.name != job_id and target.is_dir()):
            logger.warning("job %s: not removing %r, outside its own files under ARTIFACTS_DIR", job_id, relative)
            continue
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink(missing_ok=True)
        else:
            continue
        removed.append(target)
    return removed
