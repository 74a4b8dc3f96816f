"""The Celery worker app: `celery -A worker.celery_app worker`.

Jobs are long (minutes to hours) and GPU-bound, so run one solo process per GPU:

    CUDA_VISIBLE_DEVICES=0 celery -A worker.celery_app worker --pool=solo --concurrency=1 -n gpu0@%h
    CUDA_VISIBLE_DEVICES=1 celery -A worker.celery_app worker --pool=solo --concurrency=1 -n gpu1@%h

A message is acknowledged only after its job ends (`task_acks_late`), each process reserves one job
at a time (prefetch 1), and Redis gives an unacknowledged job back to the queue only after the
visibility timeout, which is longer than the longest job. There is no result backend: the job
store (DATABASE_URL) is the source of truth, and a worker that dies mid-job is detected by the
store's heartbeat lease (JOB_LEASE_SECONDS). A worker told to stop (SIGTERM, Ctrl-C) does not wait
for its job to end: it queues the job again and exits (worker/shutdown.py)."""

from __future__ import annotations

import logging

from celery import Celery, signals
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from core import logs
from core.broker import client_config
from core.config import get_settings
from core.db import ensure_schema, get_engine
from core.niceness import lower_priority
from core.schema import SchemaError

VISIBILITY_TIMEOUT_SECONDS = 12 * 3600  # > the longest job; else Redis redelivers a running job
BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuOperationalError, RedisError, ConnectionError)

settings = get_settings()
logger = logging.getLogger(__name__)

app = Celery("lrcam", broker=settings.REDIS_URL, include=["worker.tasks"])
app.conf.update(
    client_config(settings.JOB_QUEUE),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_track_started=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=1,
    worker_pool="solo",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
    task_ignore_result=True,
)


@signals.setup_logging.connect  # type: ignore[untyped-decorator]  # celery ships no type hints
def _logging(loglevel: int | str | None = None, **_: object) -> None:
    """Our handler instead of Celery's: job and request ids on every line, LOG_FORMAT honoured."""
    logs.configure(settings.LOG_FORMAT, loglevel or logging.INFO)


@signals.worker_init.connect  # type: ignore[untyped-decorator]  # celery ships no type hints
def check_the_device(**_: object) -> None:
    """WORKER_DEVICE=cuda (the GPU image) and no GPU visible: refuse to start rather than train on the CPU."""
    if settings.WORKER_DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                "lrcam worker: not starting: WORKER_DEVICE=cuda but torch sees no GPU. Check the NVIDIA driver and "
                "the Container Toolkit (`nvidia-smi` inside the container), or set WORKER_DEVICE=auto to train on the "
                "CPU"
            )


@signals.worker_init.connect  # type: ignore[untyped-decorator]  # celery ships no type hints
def yield_the_cores(**_: object) -> None:
    """WORKER_NICE: training takes the CPU time the API on the same cores leaves, before torch starts
    its threads (they inherit the niceness)."""
    if settings.WORKER_NICE:
        lower_priority(settings.WORKER_NICE, setting="WORKER_NICE")


@signals.worker_init.connect  # type: ignore[untyped-decorator]  # celery ships no type hints
def _check_the_store(**_: object) -> None:
    """Refuse to start on a store at a schema revision this code does not know (a newer lrcam
    migrated it); bring an older one up to date. A store that does not answer yet is no reason not
    to start: each task retries until it does."""
    try:
        ensure_schema(get_engine(settings.DATABASE_URL))
    except SchemaError as exc:
        raise SystemExit(f"lrcam worker: not starting: {exc}") from exc  # Celery's signals swallow Exceptions
    except SQLAlchemyError as exc:
        logger.warning("job store unreachable at start (DATABASE_URL); tasks will retry: %s", exc)
