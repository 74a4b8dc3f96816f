"""Caps that keep one client from taking the whole service: concurrent predictions (429 beyond
MAX_CONCURRENT_PREDICTS, the slot given back afterwards), and a store pool that cannot starve the
API's threads. The queued-jobs cap is in test_api_jobs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from api_support import FakeBroker, make_client, png_bytes
from fastapi import HTTPException

from core.db import get_engine
from service import predictions


def blocking_lookup(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Semaphore, threading.Event]:
    """Predictions that hold their slot until released (each stands for a long one): (entered, release)."""
    entered, release = threading.Semaphore(0), threading.Event()

    def slow_lookup(database_url, checkpoint):
        entered.release()
        assert release.wait(30)
        raise HTTPException(404, "no checkpoint (test)")

    monkeypatch.setattr(predictions, "find_checkpoint", slow_lookup)
    return entered, release


FILES = {"file": ("x.png", png_bytes(), "image/png")}


def test_predictions_beyond_the_cap_and_the_queue_get_429_and_slots_come_back(configure, monkeypatch) -> None:
    configure(MAX_CONCURRENT_PREDICTS=1, PREDICT_QUEUE=0)
    entered, release = blocking_lookup(monkeypatch)
    with make_client(FakeBroker()) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict", files=FILES)
        assert entered.acquire(timeout=30)
        refused = client.post("/predict", files=FILES)
        assert refused.status_code == 429 and "MAX_CONCURRENT_PREDICTS=1, PREDICT_QUEUE=0" in refused.json()["detail"]
        assert refused.headers["Retry-After"] == "1"
        assert client.get("/jobs").status_code == 200  # other endpoints are not capped
        release.set()
        assert first.result(timeout=30).status_code == 404
        assert client.post("/predict", files=FILES).status_code == 404  # the slot was given back
        assert client.app.state.predict_gate.active == 0


def test_predictions_wait_in_the_queue_for_a_slot_in_arrival_order(configure, monkeypatch) -> None:
    configure(MAX_CONCURRENT_PREDICTS=1, PREDICT_QUEUE=2, PREDICT_WAIT_SECONDS=30)
    entered, release = blocking_lookup(monkeypatch)
    with make_client(FakeBroker()) as client, ThreadPoolExecutor(4) as pool:
        running = pool.submit(client.post, "/predict", files=FILES)
        assert entered.acquire(timeout=30)
        waiting = [pool.submit(client.post, "/predict", files=FILES) for _ in range(2)]
        gate = client.app.state.predict_gate
        deadline = time.monotonic() + 30
        while len(gate.waiters) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = client.post("/predict", files=FILES)  # the queue is full
        assert refused.status_code == 429 and "2 waiting" in refused.json()["detail"]
        release.set()  # each finishes in turn: every waiting request is served, none refused
        assert [f.result(timeout=30).status_code for f in (running, *waiting)] == [404, 404, 404]
        assert gate.active == 0 and not gate.waiters


def test_a_prediction_that_waited_too_long_gets_429(configure, monkeypatch) -> None:
    configure(MAX_CONCURRENT_PREDICTS=1, PREDICT_QUEUE=4, PREDICT_WAIT_SECONDS=0.3)
    entered, release = blocking_lookup(monkeypatch)
    with make_client(FakeBroker()) as client, ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.post, "/predict", files=FILES)
        assert entered.acquire(timeout=30)
        late = client.post("/predict", files=FILES)
        assert late.status_code == 429 and "PREDICT_WAIT_SECONDS" in late.json()["detail"]
        release.set()
        assert running.result(timeout=30).status_code == 404
        gate = client.app.state.predict_gate
        assert gate.active == 0 and not gate.waiters  # the one that gave up left no trace


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
