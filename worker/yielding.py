"""A training worker yields a core to the API's predictions while the API marks them waiting
(YIELD_TO_PREDICTIONS; core.predicting): torch trains on one thread fewer until the mark expires."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from core.config import Settings
from core.predicting import READ_EVERY_SECONDS, Every, mark_key
from worker.celery_app import BROKER_ERRORS, app
from worker.reporting import StoreReporter

logger = logging.getLogger(__name__)


class CoreYield:
    """`poll` (every few batches): while `waiting()` says predictions wait, torch runs on one thread
    fewer than it had (at least one); once they are gone, on as many as before. `restore` at the end."""

    def __init__(
        self,
        waiting: Callable[[], bool],
        *,
        every: Every | None = None,
        get_threads: Callable[[], int] | None = None,
        set_threads: Callable[[int], None] | None = None,
    ) -> None:
        """`get_threads` and `set_threads`: torch's, unless given."""
        self.waiting, self.every = waiting, every or Every(READ_EVERY_SECONDS)
        self.get_threads = get_threads or torch.get_num_threads
        self.set_threads = set_threads or torch.set_num_threads
        self.threads: int | None = None  # torch's threads before yielding; None while not yielding

    def poll(self) -> None:
        if not self.every.due():
            return
        waiting = self.waiting()
        if waiting and self.threads is None and (threads := self.get_threads()) > 1:
            self.threads = threads
            self.set_threads(threads - 1)
        elif not waiting:
            self.restore()

    def restore(self) -> None:
        if self.threads is not None:
            self.set_threads(self.threads)
            self.threads = None


def marked(queue: str) -> bool:
    """Whether the API marked predictions waiting (read through the worker's broker connection: every
    REDIS_URL Celery accepts); an unreachable broker means no."""
    try:
        with app.connection_for_write() as connection:
            with connection.default_channel.conn_or_acquire() as client:
                return bool(client.exists(mark_key(queue)))
    except BROKER_ERRORS as exc:
        logger.debug("YIELD_TO_PREDICTIONS: the mark could not be read: %s", exc)
        return False


@contextmanager
def yielding(settings: Settings, reporter: StoreReporter) -> Iterator[None]:
    """With YIELD_TO_PREDICTIONS, the run polls the mark where it polls its stop flag; torch's threads
    are restored when the block ends."""
    if not settings.YIELD_TO_PREDICTIONS:
        yield
        return
    cores = CoreYield(lambda: marked(settings.JOB_QUEUE))
    reporter.on_poll = cores.poll
    try:
        yield
    finally:
        reporter.on_poll = None
        cores.restore()
