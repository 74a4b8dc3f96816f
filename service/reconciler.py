"""The job store is the source of truth; the broker only carries a copy of each queued job. The
reconciler brings the broker back in line with the store, every RECONCILE_SECONDS in the API:

- a running job whose worker died (no heartbeat for JOB_LEASE_SECONDS) is queued again and sent,
  until MAX_JOB_ATTEMPTS deliveries have started it; then it fails saying its worker died;
- a queued job older than QUEUED_GRACE_SECONDS that is not in the broker's queue (Redis restarted
  without its data, say) is sent again.

- a running job whose worker heart-beats but has made no progress for JOB_STALL_SECONDS is treated
  the same way, its error saying it stalled.

Several API processes (uvicorn --workers N, replicas) share one reconciler: each pass first takes the
store's `reconciler` lease (for three passes' time, on the store's clock), and only its holder
reconciles. Reads of the API never write: a dead worker's job shows `running` until the next pass.

Sending a job twice is harmless: a worker claims a job only while it is queued (or its worker is
dead), so the second delivery of a job already running or ended is skipped."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta

from core import store
from core.broker import BrokerUnavailable
from core.config import Settings
from core.db import session_for, utcnow
from service.broker import Broker
from service.dataset_imports import fail_interrupted
from service.errors import STORE_ERRORS

logger = logging.getLogger(__name__)


LEASE = "reconciler"
HOLDER = f"{socket.gethostname()}/{os.getpid()}"  # this API process


@dataclass
class Reconciled:
    sent: list[str] = field(default_factory=list)  # jobs sent to the broker again
    ended: list[str] = field(default_factory=list)  # dead workers' jobs failed or cancelled
    skipped: bool = False  # another API process holds the reconciler lease
    imports_failed: list[str] = field(default_factory=list)  # dataset imports whose API process stopped


def reconcile(settings: Settings, broker: Broker, *, holder: str = HOLDER) -> Reconciled:
    """One pass, if this process holds the reconciler lease; raises BrokerUnavailable or the store's
    errors when either does not answer."""
    with session_for(settings.DATABASE_URL) as session:
        if not store.take_lease(session, LEASE, holder=holder, seconds=3 * settings.RECONCILE_SECONDS):
            return Reconciled(skipped=True)
        reaped = store.reap_stale_jobs(
            session,
            lease_seconds=settings.JOB_LEASE_SECONDS,
            max_attempts=settings.MAX_JOB_ATTEMPTS,
            stall_seconds=settings.JOB_STALL_SECONDS,
        )
        created_before = utcnow() - timedelta(seconds=settings.QUEUED_GRACE_SECONDS)
        candidates = store.queued_jobs(session, created_before=created_before)
        candidates += [job for job_id in reaped.requeued if (job := store.get_job(session, job_id))]
    outcome = Reconciled(ended=reaped.ended, imports_failed=fail_interrupted(settings.DATABASE_URL, settings.DATA_DIR))
    if not candidates:
        return outcome
    in_queue = broker.queued_ids()
    for job in {job.id: job for job in candidates}.values():
        if job.status == "queued" and job.id not in in_queue:
            broker.send_job(job.id, job.kind, job.params)
            outcome.sent.append(job.id)
    if outcome.sent:
        logger.info("reconciler: sent %d queued job(s) the broker did not hold: %s", len(outcome.sent), outcome.sent)
    return outcome


async def reconcile_forever(settings: Settings, broker: Broker) -> None:
    """The API's background task: a pass every RECONCILE_SECONDS; an unreachable store or broker
    is logged and tried again on the next pass."""
    while True:
        try:
            await asyncio.to_thread(reconcile, settings, broker)
        except (BrokerUnavailable, *STORE_ERRORS) as exc:
            logger.warning("reconciler: skipped a pass: %s", exc)
        except Exception:  # the loop's boundary: a bug in one pass must not end reconciliation
            logger.exception("reconciler: a pass failed; this is a bug")
        await asyncio.sleep(settings.RECONCILE_SECONDS)
