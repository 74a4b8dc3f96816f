"""Concurrent /predict requests served together: one forward pass (and one GradCAM backward) per batch.

TorchServe's dynamic batching, for one API process: requests for the same checkpoint and the same
kind of answer (GradCAM or not, and its method) that are waiting together go to the model as one
batch of at most PREDICT_MAX_BATCH images, and each request gets its own results back. A batch waits
for company at most PREDICT_BATCH_DELAY_MS past the moment it could have run, and only for requests
on their way (reading their uploads) and for regular clients just answered (keep-alive connections
that came back at once last time, as many as there are free prediction slots): a lone client never
waits. The model's cost per image falls with the batch (on 2 cores a ResNet18 at width 64 takes
~2.6x less per image at 10 than at 1), and so do the hops to the model thread; bench/predict.py's
concurrency row measures it against the same server with PREDICT_MAX_BATCH=1. Clients answered
together come back one after another, so the defaults give a batch time to gather them: with 20 ms
and 16 slots (MAX_CONCURRENT_PREDICTS), 10 clients posting back to back share every pass; with 5 ms,
or 8 slots, they split into two groups that took turns with the model (bench/README.md).

The batch runs on one thread (the model thread of service.predictions): uploads are decoded
there one request at a time, each request's images reduced to the model's input before the next
request is decoded, so a batch holds no more decoded images than one request did."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

Outcome = list[dict[str, Any]] | BaseException  # a request's results, or what it is answered with instead


@dataclass(eq=False)
class Work:
    """One request: `key` says which requests may share a forward pass (any hashable; the API's is a
    `service.predictions.BatchKey`); `images` counts toward the batch size; `payload` is what the run
    function needs (its uploads, options)."""

    key: Hashable
    images: int
    payload: Any
    client: Hashable | None = None  # its connection (host, port): a client answered there may come back
    regular: bool = False  # its client came back within the delay after its last answer
    arrived: float = 0.0
    future: asyncio.Future[Outcome] = field(init=False, repr=False)  # set when submitted


RunBatch = Callable[[Sequence[Work]], Sequence[Outcome]]  # one outcome per work, in order; on the executor


class PredictBatcher:
    """Gathers `Work` submitted from the event loop into batches and runs each with `run` on `executor`.

    `max_images` 1 turns batching off (each request runs alone); a request with more images than
    `max_images` runs alone. Used from the event loop only."""

    def __init__(
        self, run: RunBatch, *, executor: Executor, max_images: int, delay: float, room: Callable[[], int] | None = None
    ) -> None:
        """`room`: how many more requests could reach the batcher now (free prediction slots); None: any."""
        self.run, self.executor, self.room = run, executor, room
        self.max_images, self.delay = max_images, delay
        self.pending: deque[Work] = deque()
        self.arriving = 0  # requests that announced themselves and have not submitted (or given up)
        self.batches = 0  # batches run so far (tests, /metrics)
        self._away: dict[Hashable, tuple[float, bool]] = {}  # clients answered, not back yet: (when, regular)
        self._free_at = -math.inf  # when the last batch was answered
        self._wakeup: asyncio.Future[None] | None = None  # a gathering batch waits on it (no loop bound here)
        self._server: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def arrival(self) -> AsyncIterator[Callable[[Work], Awaitable[list[dict[str, Any]]]]]:
        """Counts the request as on its way until it submits: a batch being gathered waits for it
        (up to the delay). Yields `submit`, which returns the request's results (or raises what it
        is answered with instead)."""
        self.arriving += 1
        submitted = False

        async def submit(work: Work) -> list[dict[str, Any]]:
            nonlocal submitted
            if not submitted:
                submitted = True
                self.arriving -= 1
            return await self.predict(work)

        try:
            yield submit
        finally:
            if not submitted:
                self.arriving -= 1
                self._changed()

    async def predict(self, work: Work) -> list[dict[str, Any]]:
        """`work`'s results, run alone or with others (for requests that did not announce themselves)."""
        outcome = await self._submit(work)
        if isinstance(outcome, BaseException):
            raise outcome  # in the request's own task: its error handlers answer it
        return outcome

    def _submit(self, work: Work) -> asyncio.Future[Outcome]:
        loop = asyncio.get_running_loop()
        work.arrived, work.future = loop.time(), loop.create_future()
        work.regular = self._away.pop(work.client, None) is not None
        self.pending.append(work)
        self._changed()
        server = self._server
        if server is None or server.done() or server.get_loop() is not loop:  # none, or one of a closed loop
            self._server = loop.create_task(self._serve(), name="predict-batcher")
        return work.future

    async def _serve(self) -> None:
        loop, me = asyncio.get_running_loop(), asyncio.current_task()
        try:
            while self.pending and self._server is me:
                await self._gather(self.pending[0], loop)
                if batch := self._take(loop):
                    await self._run(batch, loop)
        finally:
            if self._server is me:
                self._server = None

    async def _gather(self, first: Work, loop: asyncio.AbstractEventLoop) -> None:
        """While the batch has room, wait for requests on their way (reading their uploads) and for
        clients just answered, at most `delay` past the moment the batch could have run (when `first`
        arrived, or when the previous batch was answered if later).

        Clients answered together come back together, but one after another, and the first of them can
        reach the batcher before the next has been read off its socket: waiting only for requests on
        their way, 10 clients split into two groups that took turns with the model, 5 requests a pass
        instead of 10 and 176 instead of 193 answered/s (bench/README.md)."""
        deadline = max(first.arrived, self._free_at) + self.delay
        while (
            (self.arriving or self._coming_back(loop.time()))
            and self._images(first.key) < self.max_images
            and (left := deadline - loop.time()) > 0
        ):
            self._wakeup = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup, left)
        self._wakeup = None

    def _changed(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _coming_back(self, now: float) -> int:
        """Regulars answered less than `delay` ago that have not sent their next request, as many as
        could get in (with every prediction slot taken, those that come back wait for a slot, not for
        this batch). A regular is a connection that came back within the delay last time: one that
        sends one request and closes (a script calling requests.post in a loop) is never waited for."""
        regulars = sum(regular for answered, regular in self._away.values() if now - answered <= self.delay)
        return regulars if self.room is None else min(regulars, self.room())

    def _images(self, key: Hashable) -> int:
        return sum(work.images for work in self.pending if work.key == key)

    def _take(self, loop: asyncio.AbstractEventLoop) -> list[Work]:
        """The oldest pending work and as many after it with its key (in order) as fit in max_images;
        work whose client went away (or whose event loop did) is dropped."""
        batch: list[Work] = []
        images, kept = 0, deque[Work]()
        for work in self.pending:
            if work.future.done() or work.future.get_loop() is not loop:
                continue
            if not batch or (work.key == batch[0].key and images + work.images <= self.max_images):
                batch.append(work)
                images += work.images
            else:
                kept.append(work)
        self.pending = kept
        return batch

    async def _run(self, batch: list[Work], loop: asyncio.AbstractEventLoop) -> None:
        self.batches += 1
        try:
            outcomes = await loop.run_in_executor(self.executor, self.run, batch)
        except Exception as exc:  # a bug: every request of the batch gets it (answered 500, logged)
            outcomes = [exc] * len(batch)
        self._free_at = now = loop.time()
        for client in [client for client, (answered, _) in self._away.items() if now - answered > self.delay]:
            del self._away[client]  # forgotten: it went away, or thinks before it asks again
        for work, outcome in zip(batch, outcomes, strict=True):
            if not work.future.done():  # a result, not set_exception: no "never retrieved" for a gone client
                work.future.set_result(outcome)
            if work.client is not None:
                self._away[work.client] = (self._free_at, work.regular)
