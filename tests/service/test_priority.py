"""API_NICE and WORKER_NICE: a process lowers its own CPU priority, every thread of it, so that the other
one on the same cores has them first. Run in child processes: niceness cannot be lowered again
without privileges."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from core.config import Settings

CHILD = textwrap.dedent("""
    import os, threading, time
    from core.niceness import lower_priority

    started = threading.Event()
    def existing():
        started.set()
        time.sleep(2)
    thread = threading.Thread(target=existing, daemon=True)
    thread.start()
    started.wait()
    lower_priority(7, setting="API_NICE")
    lower_priority(3, setting="API_NICE")  # never lowers it again
    later = []
    threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0))).start()
    time.sleep(0.2)
    print(os.getpriority(os.PRIO_PROCESS, 0), os.getpriority(os.PRIO_PROCESS, thread.native_id), later[0])
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_lower_priority_sets_every_thread_and_the_ones_started_later() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["7", "7", "7"]


def test_api_nice_is_bounded_naming_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_NICE", "25")
    with pytest.raises(ValueError, match="API_NICE"):
        Settings(_env_file=None)
