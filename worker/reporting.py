"""How a running job talks to the store: ml's progress callbacks (throttled), epoch records, the
stop flag, and a heartbeat thread that keeps the job's lease fresh through long epochs.

The store being briefly unreachable never crashes a training run: reports are logged and dropped,
and the last known stop flag stands. A job that is no longer `running` in the store (its lease
expired, say) is told to stop; a worker shutting down interrupts it (worker/shutdown.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import store
from core.db import session_for, utcnow
from core.store import ArtifactFile
from worker import shutdown

PROGRESS_INTERVAL_SECONDS = 1.0  # at most one progress write per second
STOP_POLL_INTERVAL_SECONDS = 1.0  # at most one cancel-flag read per second
MAX_HEARTBEAT_SECONDS = 10.0  # beat at least this often, and three times per lease

T = TypeVar("T")
logger = logging.getLogger(__name__)


def heartbeat_interval(lease_seconds: float) -> float:
    return min(MAX_HEARTBEAT_SECONDS, lease_seconds / 3)


class StoreReporter:
    """`ml.progress.Callbacks` that write to the job store."""

    def __init__(
        self,
        job_id: str,
        database_url: str,
        *,
        claim: store.Claim | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Every write is fenced by `claim` (the worker's always is): once another delivery holds the
        job, nothing more is written and the run is told to stop."""
        self.job_id = job_id
        self.database_url = database_url
        self.claim = claim
        self.clock = clock
        self.progress: dict[str, Any] = {}
        self.lost = False  # the store says the job is no longer running
        # files the run rewrites every epoch, registered with each epoch so that they can be read while
        # it runs (JobRun.train: lr_steps.json, the dashboard's LR per step)
        self.live_files: Callable[[], list[ArtifactFile]] | None = None
        self.on_poll: Callable[[], None] | None = None  # called with every stop-flag poll (worker.yielding)
        self._stop = False
        self._last_write = self._last_poll = float("-inf")

    def _store(self, action: Callable[[Session], T], default: T) -> T:
        try:
            with session_for(self.database_url) as session:
                return action(session)
        except SQLAlchemyError as exc:
            logger.warning("job %s: store unreachable, report dropped: %s", self.job_id, exc)
            return default

    def beat(self, progress: dict[str, Any] | None = None) -> None:
        """Refresh the heartbeat (and progress); notes when the job is no longer running."""
        if not self._store(lambda s: store.heartbeat(s, self.job_id, progress, claim=self.claim), True):
            self.lost = True

    def on_progress(self, progress: dict[str, Any]) -> None:
        now = self.clock()
        # when it was true: progress is written at most once a second, so a reader timing a job by
        # its progress (bench/load.py's training speed) needs the time of the step, not of the read
        new_phase = progress.get("phase") != self.progress.get("phase")  # a phase shows at once, e.g. "compiling"
        self.progress = {**progress, "updated_at": utcnow().isoformat()}
        if new_phase or now - self._last_write >= PROGRESS_INTERVAL_SECONDS:
            self._last_write = now
            self.beat(self.progress)

    def on_epoch(self, record: dict[str, Any]) -> None:
        def write(session: Session) -> bool:
            if not store.add_epoch(session, self.job_id, record, claim=self.claim):
                return False
            if self.live_files is not None:
                store.add_artifacts(session, self.job_id, self.live_files(), claim=self.claim)
            return True

        if not self._store(write, True):
            self.lost = True
            return
        self._last_write = self.clock()
        self.beat(self.progress)

    def should_stop(self) -> bool:
        """True once a cancel was requested or the job is no longer running; raises ShutdownRequested
        when the worker shuts down, which ends the run at once (without its report)."""
        shutdown.check()
        if self.on_poll is not None:
            self.on_poll()
        now = self.clock()
        if not self.lost and now - self._last_poll >= STOP_POLL_INTERVAL_SECONDS:
            self._last_poll = now
            self._stop = self._store(lambda s: store.should_stop(s, self.job_id, claim=self.claim), self._stop)
        return self.lost or self._stop

    @property
    def epoch(self) -> int | None:
        return self.progress.get("epoch")

    def finish(self, status: str, **fields: Any) -> bool:
        """End the job in the store; False if it had already ended (e.g. failed by its lease)."""
        return self._store(lambda s: store.finish_job(s, self.job_id, status=status, claim=self.claim, **fields), False)


class Heartbeat:
    """A daemon thread that beats every `interval` seconds while the `with` block runs."""

    def __init__(self, reporter: StoreReporter, *, interval: float) -> None:
        self.reporter = reporter
        self.interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{reporter.job_id}", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.reporter.beat()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
