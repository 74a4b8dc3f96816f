"""A graceful worker shutdown (SIGTERM from `docker compose stop` or systemd, Ctrl-C) interrupts the
running job within a few batches and puts it back in the queue: nothing failed, so the next worker
resumes it from its last finished epoch and the delivery does not count towards MAX_JOB_ATTEMPTS.

Celery's solo pool runs the job inside the worker's main loop, and a warm shutdown only sets a
flag that the loop reads once the job has returned: without this, the job would train on until
the supervisor gives up and kills the process (`kill -9`, then a lease expiry and a used attempt)."""

from __future__ import annotations

import threading
from typing import Any

from celery import signals

# Set once this process was asked to shut down; a worker process never takes it back.
SHUTDOWN = threading.Event()


class ShutdownRequested(BaseException):
    """Raised by the job's stop poll when the worker shuts down. A BaseException, like
    KeyboardInterrupt: it is no error of the job, and no `except Exception` may swallow it."""


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]  # celery ships no type hints
def _on_worker_shutting_down(**_: Any) -> None:
    # Runs in Celery's signal handler, between two bytecodes of the running job: only set a flag.
    SHUTDOWN.set()


def check() -> None:
    """Raise ShutdownRequested once this worker is shutting down."""
    if SHUTDOWN.is_set():
        raise ShutdownRequested("the worker is shutting down")
