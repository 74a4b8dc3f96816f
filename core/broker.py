"""The contract between the API, which sends jobs, and the workers, which run them: the task's name,
its arguments and the Celery settings both sides must agree on. Plain data: neither side's Celery
code is imported here."""

from __future__ import annotations

from typing import Any

TASK_NAME = "lrcam.run_job"  # args: [job_id, kind, params]; the task id is the job id
BROKER_UNREACHABLE = "broker unreachable (REDIS_URL); the API's log has the details"  # no host, no address


class BrokerUnavailable(RuntimeError):
    """The broker (Redis) did not answer."""


def client_config(queue: str) -> dict[str, Any]:
    """Celery settings shared by the API's client and the worker (queue, serializer)."""
    return dict(task_default_queue=queue, task_serializer="json", accept_content=["json"])


def task_args(job_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `Celery.send_task` that send one job, the same from either side."""
    return dict(args=[job_id, kind, params], task_id=job_id)
