"""The API's side of YIELD_TO_PREDICTIONS (core.predicting): each /predict request marks predictions
waiting, written to the broker's Redis at most every MARK_EVERY_SECONDS, off the event loop."""

from __future__ import annotations

import asyncio
from typing import Protocol

from core.predicting import MARK_EVERY_SECONDS, MARK_SECONDS, Every, mark_key


class Marks(Protocol):
    def mark_predicting(self, key: str, seconds: float) -> None: ...


class PredictingMarker:
    """Used from the event loop: `note()` for every /predict request."""

    def __init__(self, broker: Marks, *, queue: str, every: Every | None = None) -> None:
        self.broker, self.key = broker, mark_key(queue)
        self.every = every or Every(MARK_EVERY_SECONDS)

    def note(self) -> None:
        if self.every.due():  # on the default executor: a slow broker never holds the event loop
            asyncio.get_running_loop().run_in_executor(None, self.broker.mark_predicting, self.key, MARK_SECONDS)
