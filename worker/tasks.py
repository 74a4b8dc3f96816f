"""The one Celery task, thin like a web view: claim the job, run it with store-backed callbacks,
and end it with a readable status. It never raises into Celery for a job's own failure, so the
worker process lives on to take the next job. A worker shutting down puts its job back in the
queue (worker/shutdown.py)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task
from sqlalchemy.exc import SQLAlchemyError

from core import store
from core.broker import TASK_NAME, task_args
from core.config import Settings, get_settings
from core.db import session_for
from core.logs import JobLogHandler, job_id_var, redact, server_roots
from worker.celery_app import BROKER_ERRORS, app
from worker.failures import EXPECTED_ERRORS, describe, release_memory
from worker.reporting import Heartbeat, StoreReporter, heartbeat_interval
from worker.runs import JobRun
from worker.shutdown import SHUTDOWN, ShutdownRequested
from worker.yielding import yielding

STORE_RETRY_SECONDS = 15
STORE_RETRIES = 40  # ten minutes of a store that does not answer before the delivery is dropped

logger = logging.getLogger(__name__)


@contextmanager
def job_logging(job_id: str, settings: Settings) -> Iterator[None]:
    """The job's id on every log line of its run, and those lines kept in its folder's job.log (its
    server paths written as DATA_DIR, ARTIFACTS_DIR...: the log is served over HTTP)."""
    token = job_id_var.set(job_id)
    roots = server_roots(settings.DATA_DIR, settings.ARTIFACTS_DIR)
    handler = JobLogHandler(job_id, settings.ARTIFACTS_DIR.resolve() / job_id, roots=roots)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        job_id_var.reset(token)


@app.task(name=TASK_NAME, bind=True)  # type: ignore[untyped-decorator]  # celery ships no type hints
def run_job(self: Task, job_id: str, kind: str, params: dict[str, Any]) -> str:
    """Run job `job_id` once: skipped when it ended, was cancelled, or runs in another live delivery."""
    settings = get_settings()
    worker = worker_name(self.request.hostname)
    try:
        with session_for(settings.DATABASE_URL) as session:
            job = store.claim_job(session, job_id, worker=worker, lease_seconds=settings.JOB_LEASE_SECONDS)
            claim = store.Claim.of(job) if job is not None else None
    except SQLAlchemyError as exc:  # the store is down: deliver the job again later rather than drop it
        raise self.retry(exc=exc, countdown=STORE_RETRY_SECONDS, max_retries=STORE_RETRIES) from exc
    if claim is None:
        logger.info("job %s: not claimed (ended, cancelled, or running elsewhere); skipped", job_id)
        return "skipped"
    with job_logging(job_id, settings):
        logger.info("%s job claimed by worker %s (attempt %d)", kind, claim.worker, claim.attempt)
        status = _run(settings, claim, kind, params)
        logger.info("job ended: %s", status)
        return status


def _run(settings: Settings, claim: store.Claim, kind: str, params: dict[str, Any]) -> str:
    job_id = claim.job_id
    reporter = StoreReporter(job_id, settings.DATABASE_URL, claim=claim)
    job_run = JobRun(job_id, settings, reporter)
    try:
        with Heartbeat(reporter, interval=heartbeat_interval(settings.JOB_LEASE_SECONDS)), yielding(settings, reporter):
            outcome = job_run.run(kind, params)
    except ShutdownRequested:  # SIGTERM or Ctrl-C: the run stopped after a batch; nothing failed
        return requeue(settings, kind, params, claim=claim)
    except (KeyboardInterrupt, SystemExit):  # Celery's hard shutdown (a third Ctrl-C) raises these
        if SHUTDOWN.is_set():
            requeue(settings, kind, params, claim=claim)
        else:
            reporter.finish("failed", error="the worker was shut down while running this job; submit it again")
        raise
    except Exception as exc:  # the task boundary: every failure ends the job, none kills the worker
        if SHUTDOWN.is_set():  # a second Ctrl-C (cold shutdown) raises NotImplementedError in a solo job
            return requeue(settings, kind, params, claim=claim)
        release_memory(exc)
        if not isinstance(exc, EXPECTED_ERRORS):
            logger.exception("job %s: unexpected error", job_id)
        job_run.salvage()
        error = describe(exc, epoch=reporter.epoch, params=params)
        logger.error("job failed: %s", error)
        error = redact(error, server_roots(settings.DATA_DIR, settings.ARTIFACTS_DIR))  # shown over HTTP
        reporter.finish("failed", error=error, progress=reporter.progress)
        return "failed"
    reporter.finish(
        outcome.status, result=outcome.result, checkpoint_id=outcome.checkpoint_id, progress=outcome.progress
    )
    return outcome.status


def worker_name(node: str | None) -> str:
    """The claim's worker: the Celery node name (`celery@<host>` unless `-n` says otherwise) and the
    process id, so that two workers started on one machine with the default name never share a claim."""
    return f"{node or socket.gethostname()}/{os.getpid()}"


def requeue(settings: Settings, kind: str, params: dict[str, Any], *, claim: store.Claim) -> str:
    """Give an interrupted job back: queued again without using an attempt, its finished epochs and
    `checkpoints/last` kept, and sent to the broker now (if Redis does not answer, the API's
    reconciler sends it once QUEUED_GRACE_SECONDS have passed). The current message is acknowledged
    when the task returns; should Redis deliver it again too (a hard shutdown leaves it
    unacknowledged), `claim_job` skips whichever delivery comes second."""
    job_id = claim.job_id
    try:
        with session_for(settings.DATABASE_URL) as session:
            status = store.requeue_job(session, job_id, claim=claim, count_attempt=False)
    except SQLAlchemyError as exc:  # its lease will expire: the reconciler re-queues it then
        logger.warning("job %s: interrupted by the shutdown; could not queue it again: %s", job_id, exc)
        return "interrupted"
    if status != "queued":
        logger.info("job %s: interrupted by the shutdown; now %s", job_id, status or "no longer ours")
        return status or "interrupted"
    try:
        app.send_task(TASK_NAME, **task_args(job_id, kind, params), queue=settings.JOB_QUEUE, retry=False)
    except BROKER_ERRORS as exc:
        logger.warning("job %s: queued again; the reconciler will send it (%s)", job_id, exc)
    logger.info("job %s: interrupted by the worker's shutdown; queued again", job_id)
    return "requeued"
