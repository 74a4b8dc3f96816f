"""Prometheus metrics at `GET /metrics` (behind the API key when one is set).

Counted by this API process as requests pass (each replica is scraped on its own): requests by
route template, method and status, their latency, predictions (images, GradCAM or not) with
their latency, and how many requests each batched forward pass served. Read from the store and the
broker at each scrape, the same from every replica: jobs by status and kind, the broker's queue
depth, the durations of the last finished jobs, and the age of each running job's worker heartbeat.

Scrape config: `scrape_configs: [{job_name: lrcam, static_configs: [{targets: ["api:8000"]}],
authorization: {credentials: <API_KEY>}}]`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from core.broker import BrokerUnavailable
from core.config import Settings
from core.db import ENDED_STATUSES, Job, session_for, utcnow
from service.broker import Broker
from service.errors import STORE_ERRORS

logger = logging.getLogger(__name__)
REGISTRY = CollectorRegistry()  # the app's own: nothing of other libraries' default registry
CONTENT_TYPE = CONTENT_TYPE_LATEST
RECENT_JOBS = 1000  # finished jobs whose durations make the histogram (one indexed query)
JOB_SECONDS = (10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600)

REQUESTS = Counter("lrcam_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram(
    "lrcam_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=REGISTRY
)
PREDICTIONS = Counter("lrcam_predictions", "images predicted by POST /predict", ["gradcam"], registry=REGISTRY)
PREDICT_LATENCY = Histogram(
    "lrcam_prediction_duration_seconds",
    "decoding and model time of one POST /predict",
    ["gradcam"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_REQUESTS = Histogram(
    "lrcam_prediction_batch_requests",
    "POST /predict requests served by one forward pass (service.batching)",
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def observe_batch(requests: int) -> None:
    BATCH_REQUESTS.observe(requests)


def observe_prediction(images: int, *, gradcam: bool, seconds: float) -> None:
    PREDICTIONS.labels(str(gradcam).lower()).inc(images)
    PREDICT_LATENCY.labels(str(gradcam).lower()).observe(seconds)


class StoreCollector(Collector):
    """What the store and the broker say at scrape time."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        try:
            with session_for(self.settings.DATABASE_URL) as session:
                counts = session.execute(
                    select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)
                ).all()
                ended = session.execute(
                    select(Job.kind, Job.started_at, Job.finished_at)
                    .where(Job.status.in_(ENDED_STATUSES), Job.started_at.is_not(None))
                    .order_by(Job.finished_at.desc())
                    .limit(RECENT_JOBS)
                ).all()
                beats = session.execute(
                    select(Job.id, Job.worker, Job.heartbeat_at).where(Job.status == "running")
                ).all()
        except STORE_ERRORS as exc:
            logger.warning("metrics: job store unreachable: %s", exc)
            return
        jobs = GaugeMetricFamily("lrcam_jobs", "jobs in the store by status and kind", labels=["status", "kind"])
        for status, kind, count in counts:
            jobs.add_metric([status, kind], count)
        yield jobs
        yield from _durations(ended)
        now = utcnow()
        heartbeats = GaugeMetricFamily(
            "lrcam_worker_heartbeat_age_seconds",
            "seconds since a running job's worker last heart-beat",
            labels=["job_id", "worker"],
        )
        for job_id, worker, beat in beats:
            heartbeats.add_metric([job_id, worker or ""], (now - beat).total_seconds() if beat else float("nan"))
        yield heartbeats
        try:
            depth = len(self.broker.queued_ids())
        except BrokerUnavailable:
            return
        yield GaugeMetricFamily("lrcam_queue_depth", "jobs waiting in the broker's queue", value=depth)


def _durations(ended: Iterable[tuple[str, datetime | None, datetime | None]]) -> Iterator[HistogramMetricFamily]:
    by_kind: dict[str, list[float]] = {}
    for kind, started, finished in ended:
        assert started is not None and finished is not None, f"ended job without its times: {started}, {finished}"
        by_kind.setdefault(kind, []).append((finished - started).total_seconds())
    family = HistogramMetricFamily(
        "lrcam_job_duration_seconds", f"run time of the last {RECENT_JOBS} finished jobs", labels=["kind"]
    )
    for kind, seconds in by_kind.items():
        buckets = [(str(float(bound)), sum(s <= bound for s in seconds)) for bound in JOB_SECONDS]
        family.add_metric([kind], [*buckets, ("+Inf", len(seconds))], sum(seconds))
    yield family


def exposition(settings: Settings, broker: Broker) -> bytes:
    """The text format, the store's figures read now."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(settings, broker))
    return generate_latest(REGISTRY) + generate_latest(registry)
