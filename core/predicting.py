"""Interactive predictions before training where the API and a worker share CPU cores
(YIELD_TO_PREDICTIONS, set by `scripts/up`). The API marks a key in the broker's Redis while
/predict requests come; a training worker reads it where training reports its progress (every few
batches) and, while it is set, trains on one torch thread fewer, leaving a core to the predictions.

Without it, torch's OpenMP team of the worker (one thread per core) and the API's prediction thread
take turns on the cores: a team whose thread is preempted waits at every layer's barrier, so both
training and predictions crawl (bench/README.md, the load test). Plain data and a clock: the API and
the worker each write and read the key through their own Redis client."""

from __future__ import annotations

import time
from collections.abc import Callable

MARK_SECONDS = 2.0  # a mark outlives the last prediction by this much: clients predicting every second keep it
MARK_EVERY_SECONDS = 0.5  # the API writes the mark at most this often
READ_EVERY_SECONDS = 0.25  # a worker reads it at most this often (it polls every few batches)


def mark_key(queue: str) -> str:
    """The key of the API and the workers of one deployment (one JOB_QUEUE)."""
    return f"lrcam:predicting:{queue}"


class Every:
    """True at most once every `seconds` (by `clock`), the first time at once."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self._last = float("-inf")

    def due(self) -> bool:
        now = self.clock()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
