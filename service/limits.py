"""Caps on work the API takes on at once: concurrent predictions share the CPU (or GPU) with each
other, so beyond MAX_CONCURRENT_PREDICTS a request is refused with 429 rather than queued behind
the others until every one of them times out. And the API's CPU priority (API_NICE) where a worker
trains on the same cores."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import HTTPException, status

from service.config import SettingsDep

RETRY_AFTER_SECONDS = 1  # a prediction takes well under a second on the small models


class Slots:
    """A counter of requests in flight. Used from the event loop only (no await between the check
    and the increment), so it needs no lock."""

    def __init__(self) -> None:
        self.active = 0

    def take(self, limit: int, *, what: str, setting: str) -> None:
        if self.active >= limit:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"{self.active} {what} are running, the most allowed ({setting}={limit}); retry in a moment",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.active += 1

    def give_back(self) -> None:
        self.active -= 1


predict_slots = Slots()


async def predict_slot(settings: SettingsDep) -> AsyncIterator[None]:
    """Holds one of MAX_CONCURRENT_PREDICTS slots for the request's duration; 429 when none is free."""
    predict_slots.take(settings.MAX_CONCURRENT_PREDICTS, what="predictions", setting="MAX_CONCURRENT_PREDICTS")
    try:
        yield
    finally:
        predict_slots.give_back()


logger = logging.getLogger(__name__)


def lower_priority(niceness: int) -> None:
    """Raise this process's niceness to `niceness` (never lower it): on shared CPUs the scheduler then
    gives a training worker the cores first, and polls and predictions wait instead of training.
    Linux keeps a niceness per thread, so every thread is set, and threads started later (the
    request thread pool, torch's) inherit it."""
    tasks = Path("/proc/self/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    for thread in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except (OSError, AttributeError) as exc:  # a thread that just ended; no setpriority on Windows
            logger.debug("API_NICE: thread %s not changed: %s", thread, exc)
