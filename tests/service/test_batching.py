"""service.batching.PredictBatcher on its own: what waits together runs together, each answered alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from service.batching import Outcome, PredictBatcher, Work


class Model:
    """A run function that records its batches; each work's payload is its answer (or an exception)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Sequence[Work]) -> list[Outcome]:
        self.gate.wait(10)
        self.batches.append([work.payload for work in batch])
        return [work.payload for work in batch]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def work(payload: Any, *, key: str = "a", images: int = 1, client: str | None = None) -> Work:
    return Work(key=key, images=images, payload=payload, client=client)


async def occupied(batcher: PredictBatcher, model: Model) -> asyncio.Task:
    """The model busy with a request ("busy") that the batcher took alone: what comes next queues."""
    model.gate.clear()
    busy = asyncio.create_task(batcher.predict(work("busy")))
    await until(lambda: batcher.batches == 1)
    return busy


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def test_requests_waiting_together_share_one_run_and_each_gets_its_own_results(executor) -> None:
    async def scenario() -> None:
        model = Model()
        batcher = PredictBatcher(model, executor=executor, max_images=64, delay=0.005)
        model.gate.clear()  # the model is busy with the first request while five more queue
        first = asyncio.create_task(batcher.predict(work(["r0"])))
        await until(lambda: batcher.batches == 1)
        rest = [asyncio.create_task(batcher.predict(work([f"r{i}"]))) for i in range(1, 6)]
        await until(lambda: len(batcher.pending) == 5)
        model.gate.set()
        assert await first == ["r0"]
        assert [await task for task in rest] == [[f"r{i}"] for i in range(1, 6)]
        assert model.batches == [[["r0"]], [[f"r{i}"] for i in range(1, 6)]]

    asyncio.run(scenario())


def test_other_keys_and_images_beyond_the_maximum_go_to_later_batches_in_order(executor) -> None:
    async def scenario() -> None:
        model = Model()
        batcher = PredictBatcher(model, executor=executor, max_images=4, delay=0)
        busy = await occupied(batcher, model)
        asks = [
            work("a1", images=2),
            work("b1", key="b"),
            work("a2", images=2),
            work("a3", images=1),
            work("b2", key="b"),
            work("big", images=9),
        ]
        tasks = [asyncio.create_task(batcher.predict(ask)) for ask in asks]
        await until(lambda: len(batcher.pending) == len(asks))
        model.gate.set()
        assert [await task for task in [busy, *tasks]] == ["busy", "a1", "b1", "a2", "a3", "b2", "big"]
        # the oldest first with what fits of its key; a request larger than the maximum runs alone
        assert model.batches == [["busy"], ["a1", "a2"], ["b1", "b2"], ["a3"], ["big"]]

    asyncio.run(scenario())


def test_max_images_1_runs_every_request_alone(executor) -> None:
    async def scenario() -> None:
        model = Model()
        batcher = PredictBatcher(model, executor=executor, max_images=1, delay=5.0)
        model.gate.clear()
        tasks = [asyncio.create_task(batcher.predict(work(i))) for i in range(4)]
        await until(lambda: len(batcher.pending) == 3)
        model.gate.set()
        assert [await task for task in tasks] == [0, 1, 2, 3]
        assert model.batches == [[0], [1], [2], [3]]

    asyncio.run(scenario())


def test_a_lone_request_does_not_wait_for_the_delay(executor) -> None:
    async def scenario() -> None:
        batcher = PredictBatcher(Model(), executor=executor, max_images=64, delay=30.0)
        started = time.monotonic()
        async with batcher.arrival() as submit:
            assert await submit(work("alone")) == "alone"
        assert time.monotonic() - started < 5  # not the 30 s delay: nobody else was on the way

    asyncio.run(scenario())


def test_a_batch_waits_for_requests_still_uploading_but_at_most_the_delay(executor) -> None:
    async def scenario() -> None:
        model = Model()
        batcher = PredictBatcher(model, executor=executor, max_images=64, delay=5.0)
        uploaded = asyncio.Event()

        async def slow_client() -> Any:
            async with batcher.arrival() as submit:
                await uploaded.wait()  # still reading its upload
                return await submit(work("slow"))

        slow = asyncio.create_task(slow_client())
        await until(lambda: batcher.arriving == 1)
        fast = asyncio.create_task(batcher.predict(work("fast")))
        await asyncio.sleep(0.05)
        assert model.batches == []  # the fast one waits for the slow one's upload...
        uploaded.set()
        assert (await fast, await slow) == ("fast", "slow")
        assert model.batches == [["fast", "slow"]]  # ...and they share the run

        short = PredictBatcher(model, executor=executor, max_images=64, delay=0.05)
        async with short.arrival():  # announced, never submits
            started = time.monotonic()
            assert await short.predict(work("waited")) == "waited"
            assert 0.04 < time.monotonic() - started < 5  # waited the delay, no longer

    asyncio.run(scenario())


def test_a_batch_waits_for_regular_clients_just_answered_while_they_can_get_in(executor) -> None:
    """Clients answered together come back one after another: the first back waits (at most the delay)
    for the other regulars (connections that came back at once before), not for one-shot connections,
    and not for any when no prediction slot is free for them."""

    async def scenario(free_slots: int) -> list[list[Any]]:
        model = Model()
        batcher = PredictBatcher(model, executor=executor, max_images=64, delay=5.0, room=lambda: free_slots)
        busy = await occupied(batcher, model)
        together = [asyncio.create_task(batcher.predict(work(c, client=c))) for c in ("c1", "c2", "once")]
        await until(lambda: len(batcher.pending) == 3)
        model.gate.set()
        assert [await task for task in (busy, *together)] == ["busy", "c1", "c2", "once"]
        started = time.monotonic()
        assert await batcher.predict(work("c1", client="c1")) == "c1"  # c2 and "once" are no regulars yet
        assert time.monotonic() - started < 2.5
        back = asyncio.create_task(batcher.predict(work("c2", client="c2")))  # now both are regulars
        if free_slots:
            await asyncio.sleep(0.05)
            assert len(model.batches) == 3  # c2 waits for c1...
            assert await batcher.predict(work("c1", client="c1")) == "c1"
        assert await back == "c2"  # ...or goes at once when c1 could not get in
        return model.batches[2:]

    assert asyncio.run(scenario(free_slots=8)) == [["c1"], ["c2", "c1"]]
    assert asyncio.run(scenario(free_slots=0)) == [["c1"], ["c2"]]


def test_one_requests_error_is_its_own_and_a_failing_run_fails_only_its_batch(executor) -> None:
    async def scenario() -> None:
        model = Model()
        batcher = PredictBatcher(model, executor=executor, max_images=64, delay=0)
        busy = await occupied(batcher, model)
        good = asyncio.create_task(batcher.predict(work("good")))
        bad = asyncio.create_task(batcher.predict(work(ValueError("this one's image"))))
        await until(lambda: len(batcher.pending) == 2)
        model.gate.set()
        assert await busy == "busy" and await good == "good"
        with pytest.raises(ValueError, match="this one's image"):
            await bad

        def broken(batch: Sequence[Work]) -> list[Outcome]:
            raise RuntimeError("a bug")

        failing = PredictBatcher(broken, executor=executor, max_images=64, delay=0)
        with pytest.raises(RuntimeError, match="a bug"):
            await failing.predict(work("x"))
        failing.run = model  # the batcher goes on serving
        assert await failing.predict(work("after")) == "after"

    asyncio.run(scenario())


def test_a_request_whose_client_went_away_is_not_run(executor) -> None:
    async def scenario() -> None:
        model = Model()
        batcher = PredictBatcher(model, executor=executor, max_images=64, delay=0)
        busy = await occupied(batcher, model)
        gone = asyncio.create_task(batcher.predict(work("gone")))
        kept = asyncio.create_task(batcher.predict(work("kept")))
        await until(lambda: len(batcher.pending) == 2)
        gone.cancel()
        await asyncio.sleep(0)
        model.gate.set()
        assert await busy == "busy" and await kept == "kept"
        assert model.batches == [["busy"], ["kept"]]

    asyncio.run(scenario())


def test_a_batcher_outlives_its_event_loop(executor) -> None:
    # an app's batcher is made once; test clients (and servers restarted in-process) bring new loops,
    # and a loop can close while its batch still waits for the model
    model = Model()
    batcher = PredictBatcher(model, executor=executor, max_images=64, delay=0)

    async def abandon() -> None:
        model.gate.clear()
        asyncio.create_task(batcher.predict(work("left behind")))
        await until(lambda: batcher.batches == 1)

    asyncio.run(abandon())  # ends its loop with the batch still waiting for the model
    model.gate.set()
    assert asyncio.run(batcher.predict(work("next loop"))) == "next loop"
