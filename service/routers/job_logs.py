"""A job's own log: what its worker said about it (claimed, warnings, the error and traceback of a
failure), read from `<ARTIFACTS_DIR>/<job id>/job.log` (core.logs)."""

from __future__ import annotations

from collections import deque
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from core import store
from core.logs import JOB_LOG
from service.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/jobs/{job_id}/log", tags=["jobs"])


@router.get(
    "",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "the job's log lines (empty before its worker has said anything)",
            "content": {"text/plain": {}},
        },
        404: {"description": "no such job"},
    },
)
def job_log(
    job_id: str,
    session: SessionDep,
    settings: SettingsDep,
    tail: Annotated[int, Query(ge=1, le=10_000, description="only the last this many lines")] = 1000,
) -> PlainTextResponse:
    job = store.get_job(session, job_id)
    if job is None:
        raise store.JobNotFound(job_id)
    path = settings.ARTIFACTS_DIR.resolve() / job.id / JOB_LOG  # the store's id, never the request's text
    if not path.is_file():
        return PlainTextResponse("")
    with path.open(encoding="utf-8", errors="replace") as log:  # at most JOB_LOG_BYTES
        return PlainTextResponse("".join(deque(log, maxlen=tail)))
