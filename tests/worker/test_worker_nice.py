"""WORKER_NICE: a worker started beside the API on the same cores lowers its own CPU priority when it
starts (Celery's worker_init), before torch starts its threads, so predictions and polls have the
cores first. Run in child processes: niceness cannot be lowered again without privileges."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.config import Settings

CHILD = textwrap.dedent("""
    import os, threading
    from celery import signals
    import worker.celery_app

    signals.worker_init.send(sender=None)  # what `celery worker` sends before it takes a job
    later = []
    thread = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0)))
    thread.start()
    thread.join()
    print(os.getpriority(os.PRIO_PROCESS, 0), later[0])
""")


def niceness_after_start(tmp_path: Path, worker_nice: str | None) -> list[int]:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "LRCAM_ENV_FILE": str(tmp_path / "none")}
    env.pop("WORKER_NICE", None)
    if worker_nice is not None:
        env["WORKER_NICE"] = worker_nice
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    return [int(value) for value in result.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_the_worker_takes_worker_nice_at_start_for_every_thread(tmp_path: Path) -> None:
    assert niceness_after_start(tmp_path, "9") == [max(9, os.nice(0))] * 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_without_worker_nice_the_worker_keeps_its_priority(tmp_path: Path) -> None:
    assert niceness_after_start(tmp_path, None) == [os.nice(0)] * 2


def test_worker_nice_is_bounded_naming_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_NICE", "20")
    with pytest.raises(ValueError, match="WORKER_NICE"):
        Settings(_env_file=None)
