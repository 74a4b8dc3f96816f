"""Caps on work the API takes on at once.

A /predict request first reads its body, within PREDICT_BODY_SECONDS (else 408), while holding no
prediction slot: a client that stalls mid-upload holds only its own place, and one client may have
at most MAX_UPLOADS_PER_CLIENT requests reading or waiting at once (more get 429). Then predictions
share the CPU (or GPU) with each other: MAX_CONCURRENT_PREDICTS run at once, up to PREDICT_QUEUE more
wait for a slot in arrival order, each for at most PREDICT_WAIT_SECONDS; a request beyond the queue,
or one that waited that long, gets 429 with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator

from fastapi import HTTPException, status

RETRY_AFTER_SECONDS = 1  # a prediction takes well under a second on the small models


def busy(message: str) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class PredictGate:
    """`running` predictions at once, `queue` more waiting (first come, first served), each waiting at
    most `wait` seconds. Used from the event loop only (no await between a check and its change)."""

    def __init__(self, *, running: int, queue: int, wait: float) -> None:
        self.running, self.queue, self.wait = running, queue, wait
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def enter(self) -> None:
        if self.active < self.running and not self.waiters:
            self.active += 1
            return
        if len(self.waiters) >= self.queue:
            raise busy(
                f"{self.active} predictions are running and {len(self.waiters)} waiting, the most allowed "
                f"(MAX_CONCURRENT_PREDICTS={self.running}, PREDICT_QUEUE={self.queue}); retry in a moment"
            )
        turn = asyncio.get_running_loop().create_future()
        self.waiters.append(turn)
        try:
            await asyncio.wait_for(turn, self.wait)  # a slot is handed over by `leave`
        except TimeoutError:
            raise busy(
                f"waited {self.wait:g} s for one of MAX_CONCURRENT_PREDICTS={self.running} prediction slots "
                "(PREDICT_WAIT_SECONDS); retry in a moment"
            ) from None
        finally:
            if not turn.done() or turn.cancelled():
                self._forget(turn)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds a prediction slot for the `with` block (429 when none can be had, as `enter`)."""
        await self.enter()
        try:
            yield
        finally:
            self.leave()

    def free(self) -> int:
        """Slots a request arriving now would get at once."""
        return 0 if self.waiters else max(0, self.running - self.active)

    def leave(self) -> None:
        """Hand the slot to the first request still waiting, else free it."""
        while self.waiters:
            turn = self.waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.active -= 1

    def _forget(self, turn: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # already handed over and skipped
            self.waiters.remove(turn)


class ClientUploads:
    """How many /predict requests each client (address) has in flight, at most `per_client` each:
    stalled uploads of one client cannot take every place. Used from the event loop only."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def held(self, client: str, *, per_client: int) -> Iterator[None]:
        if self.counts.get(client, 0) >= per_client:
            raise busy(
                f"this client already has {per_client} /predict requests in flight "
                "(MAX_UPLOADS_PER_CLIENT); retry when one is answered"
            )
        self.counts[client] = self.counts.get(client, 0) + 1
        try:
            yield
        finally:
            self.counts[client] -= 1
            if not self.counts[client]:
                del self.counts[client]


@contextlib.asynccontextmanager
async def body_deadline(seconds: float) -> AsyncIterator[None]:
    """408 when the `with` block (reading a request's body) takes more than `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise HTTPException(
            status.HTTP_408_REQUEST_TIMEOUT,
            f"the request body did not arrive within {seconds:g} s (PREDICT_BODY_SECONDS)",
            headers={"Connection": "close"},
        ) from None
