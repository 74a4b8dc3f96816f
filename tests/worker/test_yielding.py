"""YIELD_TO_PREDICTIONS on the worker's side: while the API's mark says predictions wait, training
runs on one torch thread fewer, polled where training polls its stop flag, and gets its threads back
once the mark is gone and when the run ends."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from core.config import Settings
from core.predicting import Every, mark_key
from service.broker import Broker
from worker.reporting import StoreReporter
from worker.yielding import CoreYield, marked, yielding


class Threads:
    """torch.get_num_threads / set_num_threads on a counter."""

    def __init__(self, count: int) -> None:
        self.count, self.calls = count, 0

    def get(self) -> int:
        return self.count

    def set(self, count: int) -> None:
        self.count, self.calls = count, self.calls + 1


def core_yield(waiting: list[bool], threads: Threads) -> CoreYield:
    """A CoreYield reading `waiting` as it changes, every poll (no throttling)."""
    return CoreYield(lambda: waiting[0], every=Every(0), get_threads=threads.get, set_threads=threads.set)


def test_training_yields_one_thread_while_predictions_wait_and_takes_it_back_after() -> None:
    waiting, threads = [False], Threads(4)
    cores = core_yield(waiting, threads)
    cores.poll()
    assert threads.count == 4
    waiting[0] = True
    cores.poll()
    cores.poll()  # still waiting: one thread fewer, not two
    assert threads.count == 3
    waiting[0] = False
    cores.poll()
    assert threads.count == 4 and threads.calls == 2


def test_one_thread_is_never_given_up() -> None:
    threads = Threads(1)
    core_yield([True], threads).poll()
    assert threads.count == 1 and threads.calls == 0


def test_the_mark_is_read_at_most_every_interval() -> None:
    now, reads = [0.0], []
    threads = Threads(2)
    every = Every(0.25, clock=lambda: now[0])
    cores = CoreYield(
        lambda: reads.append(now[0]) or True, every=every, get_threads=threads.get, set_threads=threads.set
    )
    for step in range(10):  # polls every 0.1 s
        now[0] = step / 10
        cores.poll()
    assert reads == [0.0, 0.3, 0.6, 0.9]


def test_the_run_polls_the_mark_with_its_stop_flag_and_gets_its_threads_back(
    settings: Settings, monkeypatch, tmp_path: Path
) -> None:
    threads = Threads(2)
    monkeypatch.setattr("worker.yielding.torch.get_num_threads", threads.get)
    monkeypatch.setattr("worker.yielding.torch.set_num_threads", threads.set)
    monkeypatch.setattr("worker.yielding.marked", lambda queue: True)
    reporter = StoreReporter("job", settings.DATABASE_URL)
    monkeypatch.setattr(reporter, "_store", lambda action, default: default)
    with yielding(settings.model_copy(update={"YIELD_TO_PREDICTIONS": True}), reporter):
        assert reporter.should_stop() is False
        assert threads.count == 1
    assert threads.count == 2 and reporter.on_poll is None


def test_without_the_setting_nothing_is_polled(settings: Settings) -> None:
    reporter = StoreReporter("job", settings.DATABASE_URL)
    with yielding(settings, reporter):
        assert reporter.on_poll is None


def test_the_worker_reads_the_mark_the_api_writes(settings: Settings) -> None:
    queue = f"lrcam-test-{uuid.uuid4().hex[:8]}"
    assert not marked(queue)
    Broker(settings.REDIS_URL, queue=queue).mark_predicting(mark_key(queue), 0.3)
    assert marked(queue)
    time.sleep(0.4)
    assert not marked(queue)  # expired: the last prediction is over
