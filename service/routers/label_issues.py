"""A finished training job's likely label errors: the held-out images whose label its best checkpoint
contradicts, ranked by cleanlab's label quality score, and the GradCAM overlays of the given and the
predicted class of the first ones; read from the job's registered label_issues.json (ml.label_issues)
and the label_issues/ folder beside it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from ml import label_issues
from ml.label_issues import LabelIssues, Target
from service.deps import MAX_OFFSET, Offset, SessionDep, SettingsDep
from service.errors import Responses
from service.job_files import artifact_file
from service.schemas import LabelIssuePublic, LabelIssuesPublic

router = APIRouter(prefix="/jobs/{job_id}", tags=["examples"])

MAX_ISSUES_PAGE = 200  # issues a page; the dashboard shows 24
CACHED_TABLES = 16  # parsed label_issues.json files kept
NO_ISSUES: Responses = {
    404: {
        "description": "no such job, or it has no label issues: still running, an LR-finder job, no epoch "
        "finished (an audit: cancelled before its last fold), or it ran before they were recorded"
    }
}


@lru_cache(maxsize=CACHED_TABLES)
def _parsed(path: str, mtime_ns: int, size: int) -> LabelIssues:
    """label_issues.json parsed once per version of the file (its mtime and size key the cache)."""
    return label_issues.load(Path(path))


def _table(session: Session, settings: Settings, job_id: str) -> tuple[LabelIssues, Path]:
    """The job's label issues and the folder their overlays lie in; 404 saying why there are none."""
    job = store.get_job(session, job_id)
    if job is None:
        raise store.JobNotFound(job_id)
    path = artifact_file(session, settings.ARTIFACTS_DIR, job_id, label_issues.FILE_NAME)
    if path is None:
        if job.kind == "lr_finder":
            why = "an LR-finder job has none; a training or audit job's are found when it ends"
        elif job.status in ("queued", "running"):
            why = (
                f"it is {job.status}; they are found when its {'last fold' if job.kind == 'audit' else 'training'} ends"
            )
        else:
            why = f"it {job.status} without them (no epoch finished, or it ran before they were recorded)"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} has no label issues: {why}")
    stat = path.stat()
    return _parsed(str(path), stat.st_mtime_ns, stat.st_size), path.parent


def _overlay_url(job_id: str, table: LabelIssues, index: int, target: Target) -> str | None:
    return f"/jobs/{job_id}/label-issues/{index}/{target}.png" if table.has_overlay(index) else None


@router.get("/label-issues", responses=NO_ISSUES)
def list_label_issues(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_ISSUES_PAGE, description=f"items a page (1-{MAX_ISSUES_PAGE})")] = 50,
    offset: Offset = 0,
) -> LabelIssuesPublic:
    """The held-out images (the validation split when the job held one out, else the test set) whose
    given label the best checkpoint contradicts (cleanlab's confident learning), the most likely
    label error first."""
    table, _ = _table(session, settings, job_id)
    end = min(offset + limit, len(table.index))
    return LabelIssuesPublic(
        issues=[
            LabelIssuePublic(
                rank=position + 1,
                index=int(table.index[position]),
                given_class=table.classes[table.given[position]],
                predicted_class=table.classes[table.predicted[position]],
                score=float(table.score[position]),
                given_probability=float(table.given_probability[position]),
                given_overlay_url=_overlay_url(job_id, table, int(table.index[position]), "given"),
                predicted_overlay_url=_overlay_url(job_id, table, int(table.index[position]), "predicted"),
            )
            for position in range(offset, end)
        ],
        total=len(table.index),
        set=table.set_name,  # type: ignore[arg-type]  # "test" or "validation", as ml.trust writes it
        scored=table.scored,
    )


@router.get(
    "/label-issues/{index}/{target}.png",
    response_class=FileResponse,
    responses=NO_ISSUES | {200: {"description": "the GradCAM overlay", "content": {"image/png": {}}}},
)
def label_issue_overlay(
    job_id: str,
    index: Annotated[int, PathParam(ge=0, le=MAX_OFFSET, description="the image's position in its set")],
    target: Annotated[Target, PathParam(description="given: GradCAM of the given class | predicted: of the model's")],
    session: SessionDep,
    settings: SettingsDep,
) -> FileResponse:
    """The GradCAM overlay of one likely label error, for its given or its predicted class; 404 for an
    image that is no issue or has no overlay (past the first 50)."""
    table, folder = _table(session, settings, job_id)
    path = folder / label_issues.OVERLAY_FOLDER / label_issues.overlay_name(index, target)  # an int and a literal
    if not table.has_overlay(index) or not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"job {job_id!r} has no {target} overlay for label issue image {index}"
        )
    return FileResponse(path, media_type="image/png", content_disposition_type="inline")
