"""Helpers of the API, core and worker tests: a recording broker, a TestClient, jobs put in any state
through the store (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from core import store
from core.db import Job
from service.broker import BROKER_UNREACHABLE, BrokerUnavailable, get_broker
from service.main import create_app

with warnings.catch_warnings():  # starlette asks for httpx2, which this project does not ship
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

LOCAL_URL = "http://localhost"  # a keyless API answers loopback names only (service.guards)
LOCAL_CLIENT = ("127.0.0.1", 50000)  # and loopback clients only
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # port 1: nothing listens, connections are refused at once
TRAIN_PARAMS = {"dataset": {"name": "fashion_mnist", "train_subset": 100}, "model": {"name": "resnet18", "width": 4}}
LR_FINDER_PARAMS = {"dataset": {"name": "fashion_mnist", "train_subset": 100}, "num_iter": 10}


@dataclass
class FakeBroker:
    """Records what the API sends; `down` makes it fail as the real one does when Redis is gone."""

    down: bool = False
    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    def _check(self) -> None:
        if self.down:
            raise BrokerUnavailable(BROKER_UNREACHABLE)

    queue: list[str] = field(default_factory=list)  # ids waiting in the broker; clear it to lose them

    def send_job(self, job_id: str, kind: str, params: dict[str, Any]) -> None:
        self._check()
        self.sent.append((job_id, kind, params))
        self.queue.append(job_id)

    def queued_ids(self) -> set[str]:
        self._check()
        return set(self.queue)

    def revoke(self, job_id: str) -> None:
        self.revoked.append(job_id)

    def ping(self) -> None:
        self._check()

    marks: list[tuple[str, float]] = field(default_factory=list)  # YIELD_TO_PREDICTIONS' marks, (key, seconds)

    def mark_predicting(self, key: str, seconds: float) -> None:
        self.marks.append((key, seconds))


def make_client(broker: FakeBroker | None = None) -> TestClient:
    """A TestClient of a fresh app on the current settings (the real broker when `broker` is None)."""
    app = create_app()
    if broker is not None:
        app.dependency_overrides[get_broker] = lambda: broker
    return TestClient(app, base_url=LOCAL_URL, client=LOCAL_CLIENT)


def put_job(
    session: Session,
    *,
    kind: str = "train",
    status: str = "queued",
    params: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> Job:
    """A job brought to `status` through the store's own transitions."""
    params = params or (TRAIN_PARAMS if kind == "train" else LR_FINDER_PARAMS)
    job = store.create_job(session, kind=kind, params=params)
    if status == "cancelled":
        store.request_cancel(session, job.id)
    elif status != "queued":
        assert store.claim_job(session, job.id, worker="test-worker", lease_seconds=60) is not None
        if status != "running":
            store.finish_job(session, job.id, status=status, result=result, error=error)
    reloaded = store.get_job(session, job.id)
    assert reloaded is not None and reloaded.status == status
    return reloaded


def png_bytes(size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 40, 40), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()
