"""Registering what a run left in its folder: artifacts (top-level PNG and JSON files) and the best
checkpoint (from its manifest)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from core import store
from core.store import ArtifactFile
from ml.checkpoints import load_manifest

MEDIA_TYPES = {".png": "image/png", ".json": "application/json"}
LIVE_FILES = ("lr_steps.json", "loss_steps.json")  # rewritten by the trainer every epoch, with metrics.json


def register_artifacts(
    session: Session, job_id: str, *, out_dir: Path, root: Path, extra: list[Path], claim: store.Claim | None = None
) -> int:
    """Register the PNG/JSON files directly in `out_dir` (and `extra` ones there); returns how many
    (0 when `claim` no longer holds the job)."""
    candidates = {path.resolve() for path in (*out_dir.iterdir(), *extra) if path.is_file()}
    files = [
        ArtifactFile(name=path.name, media_type=MEDIA_TYPES[path.suffix], path=path.relative_to(root).as_posix())
        for path in sorted(candidates)
        if path.parent == out_dir.resolve() and path.suffix in MEDIA_TYPES
    ]
    return len(files) if store.add_artifacts(session, job_id, files, claim=claim) else 0


def live_artifacts(*, out_dir: Path, root: Path) -> list[ArtifactFile]:
    """The LIVE_FILES a running job has written so far, as artifacts."""
    paths = [out_dir / name for name in LIVE_FILES if (out_dir / name).is_file()]
    return [
        ArtifactFile(name=p.name, media_type=MEDIA_TYPES[p.suffix], path=p.resolve().relative_to(root).as_posix())
        for p in paths
    ]


def register_checkpoint(
    session: Session, job_id: str, *, folder: Path, root: Path, claim: store.Claim | None = None
) -> str | None:
    """The job's checkpoint row for the checkpoint folder (validated by its manifest); returns its id
    (None when `claim` no longer holds the job)."""
    manifest = load_manifest(folder)
    checkpoint = store.add_checkpoint(
        session,
        job_id=job_id,
        model=manifest["model"],
        dataset=str(manifest.get("dataset") or "unknown"),
        classes=list(manifest["classes"]),
        test_acc=manifest.get("test_acc"),
        epoch=manifest.get("epoch"),
        path=folder.resolve().relative_to(root).as_posix(),
        claim=claim,
    )
    return checkpoint.id if checkpoint is not None else None
