"""A job's files under ARTIFACTS_DIR: a registered artifact's path (never outside ARTIFACTS_DIR), and,
for a deleted job, its folder and the artifact files and checkpoint folders its rows named, never
anything outside ARTIFACTS_DIR nor another job's folder."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.orm import Session

from core import store

logger = logging.getLogger(__name__)


def artifact_file(session: Session, artifacts_dir: Path, job_id: str, name: str) -> Path | None:
    """The file of the job's registered artifact `name`, or None when it has none, its path leads outside
    ARTIFACTS_DIR, or the file is gone."""
    artifact = store.get_artifact(session, job_id, name)
    if artifact is None:
        return None
    root = artifacts_dir.resolve()
    path = (root / artifact.path).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


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
