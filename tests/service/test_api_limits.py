"""Caps that keep one client from taking the whole service: concurrent predictions (429 beyond
MAX_CONCURRENT_PREDICTS, the slot given back afterwards), and a store pool that cannot starve the
API's threads. The queued-jobs cap is in test_api_jobs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import HTTPException

from api_support import FakeBroker, make_client, png_bytes
from service.db import get_engine
from service.limits import predict_slots
from service.routers import predict as predict_router


def test_predictions_beyond_the_cap_get_429_and_slots_come_back(configure, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(MAX_CONCURRENT_PREDICTS=1)
    entered, release = threading.Event(), threading.Event()

    def slow_lookup(session, checkpoint):  # noqa: ANN001, ANN202 - stands for a long prediction
        entered.set()
        assert release.wait(30)
        raise HTTPException(404, "no checkpoint (test)")

    monkeypatch.setattr(predict_router, "_find_checkpoint", slow_lookup)
    files = {"file": ("x.png", png_bytes(), "image/png")}
    with make_client(FakeBroker()) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict", files=files)
        assert entered.wait(30)
        refused = client.post("/predict", files=files)
        assert refused.status_code == 429 and "MAX_CONCURRENT_PREDICTS=1" in refused.json()["detail"]
        assert refused.headers["Retry-After"] == "1"
        assert client.get("/jobs").status_code == 200  # other endpoints are not capped
        release.set()
        assert first.result(timeout=30).status_code == 404
        assert predict_slots.active == 0
        assert client.post("/predict", files=files).status_code == 404  # the slot was given back
    assert predict_slots.active == 0


def test_the_store_pool_has_a_connection_for_every_api_thread(settings) -> None:
    """bench/load.py found it: with 15 connections, 50 pollers took every thread waiting for one while
    predictions held theirs and waited for a thread; every request then hung for the 30 s pool timeout."""
    anyio_default_threads = 40
    engine = get_engine(settings.DATABASE_URL)
    connections = [engine.connect() for _ in range(anyio_default_threads)]  # the pool blocks on the 16th before
    try:
        assert len(connections) == anyio_default_threads
    finally:
        for connection in connections:
            connection.close()
