"""A job's files: plots, GradCAM grids, metrics.json. Only registered names are served, and only
from inside ARTIFACTS_DIR."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from core import store
from service.deps import SessionDep, SettingsDep
from service.errors import Responses
from service.schemas import ArtifactPublic, ArtifactsPublic

router = APIRouter(prefix="/jobs/{job_id}/artifacts", tags=["artifacts"])

UNKNOWN: Responses = {404: {"description": "no such job, or no artifact of that name"}}


@router.get("", responses=UNKNOWN)
def list_artifacts(job_id: str, session: SessionDep) -> ArtifactsPublic:
    if store.get_job(session, job_id) is None:
        raise store.JobNotFound(job_id)
    return ArtifactsPublic(
        artifacts=[
            ArtifactPublic(name=a.name, media_type=a.media_type, url=f"/jobs/{job_id}/artifacts/{a.name}")
            for a in store.list_artifacts(session, job_id)
        ]
    )


@router.get(
    "/{name}",
    response_class=FileResponse,
    responses=UNKNOWN | {200: {"description": "the file", "content": {"image/png": {}, "application/json": {}}}},
)
def download_artifact(job_id: str, name: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    artifact = store.get_artifact(session, job_id, name) if _plain_name(name) else None
    if artifact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} has no artifact named {name!r}")
    root = settings.ARTIFACTS_DIR.resolve()
    path = (root / artifact.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"artifact {name!r} of job {job_id!r} is missing on disk")
    return FileResponse(path, media_type=artifact.media_type, filename=name, content_disposition_type="inline")


def _plain_name(name: str) -> bool:
    """A bare file name: no folders, no parent references, nothing hidden."""
    return bool(name) and name == Path(name).name and "\\" not in name and not name.startswith(".")
