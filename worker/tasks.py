"""The one Celery task, thin like a web view: claim the job, run it with store-backed callbacks,
and end it with a readable status. It never raises into Celery for a job's own failure, so the
worker process lives on to take the next job."""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Task
from sqlalchemy.exc import SQLAlchemyError

from service import store
from service.broker import TASK_NAME
from service.config import get_settings
from service.db import session_for
from worker.celery_app import app
from worker.failures import EXPECTED_ERRORS, describe, release_memory
from worker.reporting import Heartbeat, StoreReporter, heartbeat_interval
from worker.runs import JobRun

STORE_RETRY_SECONDS = 15
STORE_RETRIES = 40  # ten minutes of a store that does not answer before the delivery is dropped

logger = logging.getLogger(__name__)


@app.task(name=TASK_NAME, bind=True)
def run_job(self: Task, job_id: str, kind: str, params: dict[str, Any]) -> str:
    """Run job `job_id` once: skipped when it ended, was cancelled, or runs in another live delivery."""
    settings = get_settings()
    worker = self.request.hostname or socket.gethostname()
    try:
        with session_for(settings.DATABASE_URL) as session:
            job = store.claim_job(session, job_id, worker=worker, lease_seconds=settings.JOB_LEASE_SECONDS)
    except SQLAlchemyError as exc:  # the store is down: deliver the job again later rather than drop it
        raise self.retry(exc=exc, countdown=STORE_RETRY_SECONDS, max_retries=STORE_RETRIES) from exc
    if job is None:
        logger.info("job %s: not claimed (ended, cancelled, or running elsewhere); skipped", job_id)
        return "skipped"
    reporter = StoreReporter(job_id, settings.DATABASE_URL)
    job_run = JobRun(job_id, settings, reporter)
    try:
        with Heartbeat(reporter, interval=heartbeat_interval(settings.JOB_LEASE_SECONDS)):
            outcome = job_run.run(kind, params)
    except (KeyboardInterrupt, SystemExit):
        reporter.finish("failed", error="the worker was shut down while running this job; submit it again")
        raise
    except Exception as exc:  # the task boundary: every failure ends the job, none kills the worker
        release_memory(exc)
        if not isinstance(exc, EXPECTED_ERRORS):
            logger.exception("job %s: unexpected error", job_id)
        job_run.salvage()
        reporter.finish("failed", error=describe(exc, epoch=reporter.epoch), progress=reporter.progress)
        return "failed"
    reporter.finish(
        outcome.status, result=outcome.result, checkpoint_id=outcome.checkpoint_id, progress=outcome.progress
    )
    return outcome.status
