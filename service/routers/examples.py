"""A finished training job's test examples as data: pages of misclassified or correct images with their
classes and confidences, their GradCAM overlays, and the confusion matrix; all read from the job's
registered examples.json (ml.examples) and the examples/ folder beside it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from ml import examples
from ml.examples import Examples, Kind, Sort
from service.deps import MAX_OFFSET, Offset, SessionDep, SettingsDep
from service.errors import Responses
from service.job_files import artifact_file
from service.schemas import ConfusionPublic, ExamplePublic, ExamplesPublic

router = APIRouter(prefix="/jobs/{job_id}", tags=["examples"])

MAX_EXAMPLES_PAGE = 200  # examples a page; the dashboard shows 24
CACHED_TABLES = 16  # parsed examples.json files kept (10,000 test images: ~0.5 MB each)
CLASS_NAME = 200  # characters a class filter may have; a class name longer than that is no class of a job
NO_EXAMPLES: Responses = {
    404: {"description": "no such job, or it has no examples: still running, an LR-finder job, or no epoch finished"}
}
UNKNOWN_CLASS: Responses = {
    422: {"description": "a query value outside its allowed values, or a class the job does not have"}
}


@lru_cache(maxsize=CACHED_TABLES)
def _parsed(path: str, mtime_ns: int, size: int) -> Examples:
    """examples.json parsed once per version of the file (its mtime and size key the cache)."""
    return examples.load(Path(path))


def _table(session: Session, settings: Settings, job_id: str) -> tuple[Examples, Path]:
    """The job's examples and the folder its overlays lie in; 404 saying why there are none."""
    job = store.get_job(session, job_id)
    if job is None:
        raise store.JobNotFound(job_id)
    path = artifact_file(session, settings.ARTIFACTS_DIR, job_id, examples.FILE_NAME)
    if path is None:
        if job.kind != "train":
            why = "an LR-finder job has none; a training job's examples appear when it ends"
        elif job.status in ("queued", "running"):
            why = f"it is {job.status}; they are written when its training ends"
        else:
            why = f"it {job.status} without them (no epoch finished, or it ran before examples were recorded)"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} has no examples: {why}")
    stat = path.stat()
    return _parsed(str(path), stat.st_mtime_ns, stat.st_size), path.parent


def _class_index(table: Examples, name: str | None, parameter: str) -> int | None:
    """The index of class `name` (None or "": any class); 422 naming the job's classes otherwise."""
    if not name:
        return None
    if name not in table.classes:
        message = f"unknown class {name!r}; this job's classes are {table.classes}"
        raise RequestValidationError([{"type": "enum", "loc": ("query", parameter), "msg": message, "input": name}])
    return table.classes.index(name)


ClassFilter = Annotated[str | None, Query(max_length=CLASS_NAME, description="a class name of the job; empty: any")]


@router.get("/examples", responses=NO_EXAMPLES | UNKNOWN_CLASS)
def list_examples(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    kind: Annotated[Kind, Query(description="misclassified | correct | all test images")] = "misclassified",
    sort: Annotated[
        Sort, Query(description="-confidence: the most confident first | confidence: the least | index: test order")
    ] = "-confidence",
    true_class: ClassFilter = None,
    pred_class: ClassFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EXAMPLES_PAGE, description=f"items a page (1-{MAX_EXAMPLES_PAGE})")] = 50,
    offset: Offset = 0,
) -> ExamplesPublic:
    """The test images of a finished training job, as the best checkpoint classified them."""
    table, _ = _table(session, settings, job_id)
    chosen = table.select(
        kind=kind,
        true_class=_class_index(table, true_class, "true_class"),
        pred_class=_class_index(table, pred_class, "pred_class"),
        sort=sort,
    )
    page = [int(i) for i in chosen[offset : offset + limit]]
    return ExamplesPublic(
        examples=[
            ExamplePublic(
                index=i,
                true_class=table.classes[table.true[i]],
                pred_class=table.classes[table.pred[i]],
                confidence=float(table.confidence[i]),
                true_probability=float(table.true_probability[i]),
                overlay_url=f"/jobs/{job_id}/examples/{i}.png" if table.has_overlay(i) else None,
            )
            for i in page
        ],
        total=len(chosen),
    )


@router.get(
    "/examples/{index}.png",
    response_class=FileResponse,
    responses=NO_EXAMPLES | {200: {"description": "the GradCAM overlay", "content": {"image/png": {}}}},
)
def example_overlay(
    job_id: str,
    index: Annotated[int, PathParam(ge=0, le=MAX_OFFSET, description="the image's position in the test set")],
    session: SessionDep,
    settings: SettingsDep,
) -> FileResponse:
    """The GradCAM overlay (of the predicted class) of one test image; 404 when none was rendered for it."""
    table, folder = _table(session, settings, job_id)
    path = folder / examples.OVERLAY_FOLDER / f"{index}.png"  # an int: the name cannot leave the folder
    if not table.has_overlay(index) or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} has no overlay for test image {index}")
    return FileResponse(path, media_type="image/png", content_disposition_type="inline")


@router.get("/confusion", responses=NO_EXAMPLES)
def confusion(job_id: str, session: SessionDep, settings: SettingsDep) -> ConfusionPublic:
    """The best checkpoint's confusion matrix on the test set: rows true classes, columns predicted ones."""
    table, _ = _table(session, settings, job_id)
    return ConfusionPublic(
        classes=table.classes,
        confusion=table.confusion().tolist(),
        total=len(table.true),
        test_time_flip=table.test_time_flip,
    )
