"""A client that sends a /predict request's headers and then stalls holds no prediction slot: the
body is read first, within PREDICT_BODY_SECONDS (then 408), and one client has at most
MAX_UPLOADS_PER_CLIENT requests in flight. Against a real uvicorn, over real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from api_support import png_bytes

from service.main import create_app

STALLED = (
    b"POST /predict?checkpoint=none HTTP/1.1\r\nHost: localhost\r\n"
    b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n--xyz\r\n"
)


@pytest.fixture
def server(configure) -> Iterator[str]:
    configure(MAX_CONCURRENT_PREDICTS=2, PREDICT_QUEUE=2, PREDICT_WAIT_SECONDS=3, PREDICT_BODY_SECONDS=1.5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=30)


def stall(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.sendall(STALLED)
    return connection


def test_stalled_uploads_hold_no_slot_and_end_in_408(server: str) -> None:
    stalled = [stall(server) for _ in range(4)]  # twice the slots, all the queue
    try:
        time.sleep(0.3)
        began = time.monotonic()
        answer = httpx.post(f"{server}/predict?checkpoint=none", files={"file": ("x.png", png_bytes(), "image/png")})
        assert answer.status_code == 404, answer.text  # served at once: no slot was taken by the stalled ones
        assert time.monotonic() - began < 2
        for connection in stalled:
            connection.settimeout(10)
            head = connection.recv(4096)
            assert head.startswith(b"HTTP/1.1 408"), head[:200]
            assert b"PREDICT_BODY_SECONDS" in head
    finally:
        for connection in stalled:
            connection.close()


def test_one_client_has_at_most_its_share_of_uploads_in_flight(server: str, configure) -> None:
    configure(MAX_UPLOADS_PER_CLIENT=3)
    stalled = [stall(server) for _ in range(3)]
    try:
        time.sleep(0.3)
        refused = httpx.post(f"{server}/predict", files={"file": ("x.png", png_bytes(), "image/png")})
        assert refused.status_code == 429 and "MAX_UPLOADS_PER_CLIENT" in refused.json()["detail"]
    finally:
        for connection in stalled:
            connection.close()
