"""The stack the end-to-end tests drive: processes, HTTP helpers, and cleanup (imported by name:
pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
LEASE_SECONDS = 6  # short, so that a killed worker's job is failed within the test
STARTUP_SECONDS = 90  # the worker imports torch on a slow 2-core machine
ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    tmp: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(self.url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(self.url + path, **kwargs)

    def submit(self, kind: str, spec: dict[str, Any]) -> str:
        response = self.post(f"/jobs/{kind}", json=spec)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait(self, job_id: str, *, until: tuple[str, ...] = ENDED, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/jobs/{job_id}").json()
            if job["status"] in until:
                return job
            self.check_alive()
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout}s: {job}"
            time.sleep(0.25)

    def start_api(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", port]
        self.processes["api"] = self.spawn("api", command)

    def restart_api(self) -> None:
        api = self.processes.pop("api")
        api.terminate()
        api.wait(timeout=30)
        self.start_api()
        wait_ready(self)

    def start_worker(self) -> None:
        name = f"e2e-{uuid.uuid4().hex[:6]}@%h"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "-n",
            name,
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        self.processes["worker"] = self.spawn("worker", command)

    def kill_worker(self) -> None:
        worker = self.processes.pop("worker")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    def stop_worker(self, sig: signal.Signals, *, timeout: float = 60) -> int:
        """Send `sig` to the worker (SIGTERM: what `docker compose stop` sends) and wait for it to exit."""
        worker = self.processes.pop("worker")
        worker.send_signal(sig)
        try:
            return worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.kill()  # not left running after a failed test
            worker.wait(timeout=30)
            raise AssertionError(
                f"the worker did not stop within {timeout}s of {sig.name}:\n{self.log('worker')}"
            ) from None

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"the {name} exited ({process.returncode}):\n{self.log(name)}"

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-6000:]

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the process writes it until it ends
        return subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)


@contextmanager
def running_stack(tmp: Path, database_url: str) -> Iterator[Stack]:
    """An API and a worker on a queue of their own, ready; stopped and their queue forgotten after."""
    queue = f"lrcam-e2e-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": database_url,
        "JOB_QUEUE": queue,
        "DATA_DIR": str(tmp / "data"),
        "ARTIFACTS_DIR": str(tmp / "artifacts"),
        "JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "RECONCILE_SECONDS": "1",
        "QUEUED_GRACE_SECONDS": "3",
        "LRCAM_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        # the tests poll every 0.1 s for epochs of ~0.3 s: a cache this short stays in the path
        # without hiding a whole job (the default 0.5 s can: a job would finish before the kill)
        "METRICS_CACHE_SECONDS": "0.05",
    }
    for name in ("API_KEY", "CORS_ORIGINS", "MAX_UPLOAD_BYTES"):
        env.pop(name, None)
    running = Stack(url=f"http://127.0.0.1:{free_port()}", env=env, tmp=tmp)
    running.start_api()
    running.start_worker()
    try:
        wait_ready(running)
        yield running
    finally:
        stop_processes(running)
        running.http.close()
        forget_queue(queue)


def stop_processes(stack: Stack) -> None:
    for process in stack.processes.values():
        process.terminate()
    for process in stack.processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(stack: Stack) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        stack.check_alive()
        try:
            if stack.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the API was not ready in {STARTUP_SECONDS}s:\n{stack.log('api')}"
        time.sleep(0.3)


def forget_queue(queue: str) -> None:
    """Delete this session's queue and the unacknowledged messages a killed worker left in Redis."""
    broker = redis.Redis.from_url(REDIS_URL)
    broker.delete(queue)
    for tag, payload in broker.hscan_iter("unacked"):
        try:
            routing_key = json.loads(payload)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key == queue:
            broker.hdel("unacked", tag)
            broker.zrem("unacked_index", tag)
