"""scripts/up is safe by default: without an API key it serves loopback only and says so, and it
refuses another address until a key is set."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("API_KEY", "HOST", "PORT")}
    return env | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "DATA_DIR": str(tmp_path / "data"),
        "JOB_QUEUE": "lrcam-test-up",
        **values,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_another_address_without_a_key_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", "scripts/up"],
        cwd=ROOT,
        env=environment(tmp_path, HOST="0.0.0.0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without an API key" in result.stderr and "API_KEY" in result.stderr
    assert "starting a Celery worker" not in result.stdout  # nothing was started


def test_without_a_key_it_listens_on_loopback_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    up = subprocess.Popen(
        ["bash", "scripts/up"],
        cwd=ROOT,
        env=environment(tmp_path, PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and up.stdout is not None:
            line = up.stdout.readline()
            lines.append(line)
            if "Uvicorn running on" in line or not line:
                break
        output = "".join(lines)
        assert "no API_KEY: listening on 127.0.0.1 only" in output, output
        assert f"Uvicorn running on http://127.0.0.1:{port}" in output, output
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)
