"""CPU priority of a whole process, for an API and a worker that share cores: the scheduler gives a
core to the runnable thread of lower niceness first. Linux keeps a niceness per thread, so every
thread is set, and threads started later (a request thread pool, torch's OpenMP team, a
DataLoader's worker processes) inherit it from the thread that starts them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def lower_priority(niceness: int, *, setting: str) -> None:
    """Raise this process's niceness to `niceness` (never lower it: that needs privileges), on every
    thread it has. `setting` names the variable that asked for it, for the log."""
    tasks = Path("/proc/self/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    for thread in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except (OSError, AttributeError) as exc:  # a thread that just ended; no setpriority on Windows
            logger.debug("%s: thread %s not changed: %s", setting, thread, exc)
