"""HTTP load from prepared request bytes, for the benchmarks that stand for many clients (bench/load.py,
bench/predict.py's batching row, bench/concurrency.py).

Each client is one keep-alive HTTP/1.1 connection that sends a request built once and reads the
response by its Content-Length: a few dozen microseconds of Python per request, where httpx takes
about a millisecond. On 2 cores shared with the server that matters: the generator stands for
clients on other machines, and every millisecond it spends is one the server does not get."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

TIMEOUT_SECONDS = 30  # per request: a client never waits longer


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0  # transport errors and 5xx
    kinds: Counter = field(default_factory=Counter)  # what the errors were
    refused: int = 0  # 429: a cap said no (counted apart: that is the API protecting itself)

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.errors += other.errors
        self.kinds.update(other.kinds)
        self.refused += other.refused

    def line(self, name: str, clients: int, seconds: float) -> str:
        done = len(self.latencies)
        if done < 2:
            return f"load {name}: {clients} clients, {done} ok, errors {self.errors}, refused {self.refused}"
        q = statistics.quantiles(self.latencies, n=100)
        return (
            f"load {name}: {clients} clients, {done / seconds:.1f} req/s, p50 {q[49] * 1e3:.1f} ms, "
            f"p95 {q[94] * 1e3:.1f} ms, p99 {q[98] * 1e3:.1f} ms, errors {self.errors}, refused {self.refused}"
            + (f" ({dict(self.kinds)})" if self.kinds else "")
        )


class Connection:
    """One client: a keep-alive HTTP/1.1 connection that sends prepared request bytes and reads the
    response by its Content-Length. A few dozen microseconds of Python per request where httpx takes
    about a millisecond: on 2 cores shared with the API and a training worker, a generator at
    niceness 19 built on httpx got 0.02 cores and sent 15-30 of the 50 polls a second asked for (and
    its latencies measured its own wait for a CPU); this one sends them all."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        """The response's status code. A reused connection that the server closed before answering
        (its keep-alive timeout) is opened again and the request sent once more, as browsers do."""
        for reused in (self.writer is not None, False):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            try:
                self.writer.write(raw)
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if reused:
                    continue
                raise
            lines = head.split(b"\r\n")
            headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
            if b"content-length" not in headers:
                raise ValueError(f"a response without Content-Length: {lines[0]!r}")
            await self.reader.readexactly(int(headers[b"content-length"]))
            if headers.get(b"connection") == b"close":
                await self.close()
            return int(lines[0].split()[1])
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def post_file(path: str, port: int, field: str, filename: str, data: bytes, content_type: str) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    )
    return head.encode() + body


async def hammer(
    client: Connection,
    request: bytes,
    tally: Tally,
    until: float,
    interval: float,
    offset: float,
    *,
    refused_pause: float = 0.05,
) -> None:
    """One client: a request, then the next one `interval` s after the previous one started (at once
    when it took longer; 0 = back to back, a stress test). It starts `offset` s late: clients are
    not in step, as dashboards opened at different times are not. After a 429 it waits
    `refused_pause` s before the next request."""
    await asyncio.sleep(offset)
    while time.monotonic() < until:
        start = time.perf_counter()
        try:
            code = await asyncio.wait_for(client.request(request), TIMEOUT_SECONDS)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
            await client.close()
            tally.errors += 1
            tally.kinds[type(exc).__name__] += 1
            continue
        if code == 429:
            tally.refused += 1
            await asyncio.sleep(refused_pause)
        elif code >= 400:
            tally.errors += 1
            tally.kinds[f"HTTP {code}"] += 1
        else:
            tally.latencies.append(time.perf_counter() - start)
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - start)))


def crowd(port: int, request: bytes, clients: int, seconds: float, *, refused_pause: float = 0.0) -> Tally:
    """`clients` clients sending `request` back to back for `seconds` (a 429 retried after
    `refused_pause` s), each on its own connection: their tally."""

    async def run() -> Tally:
        tally, until = Tally(), time.monotonic() + seconds
        connections = [Connection(port) for _ in range(clients)]
        try:
            await asyncio.gather(
                *(hammer(c, request, tally, until, 0.0, 0.0, refused_pause=refused_pause) for c in connections)
            )
        finally:
            await asyncio.gather(*(c.close() for c in connections))
        return tally

    return asyncio.run(run())
