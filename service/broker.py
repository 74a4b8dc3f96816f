"""The API's side of Celery: a lightweight client app that submits jobs by task name.

It never imports the worker package (nor torch). A dead broker raises within a second or two
instead of hanging the request: no connection retries, short socket timeouts."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.url import maybe_sanitize_url
from redis.exceptions import RedisError

from core.broker import BROKER_UNREACHABLE, TASK_NAME, BrokerUnavailable, client_config, task_args
from service.deps import SettingsDep

BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuOperationalError, RedisError, ConnectionError)
FAIL_FAST_SECONDS = 2  # connect/read timeout towards the broker

logger = logging.getLogger(__name__)


class Broker:
    """Sends jobs to the workers, revokes them, and answers whether the broker is up."""

    def __init__(self, url: str, *, queue: str) -> None:
        self.url = maybe_sanitize_url(url)  # for messages: no password
        self.queue = queue
        self.app = Celery("lrcam-client", broker=url, set_as_current=False)
        self.app.conf.update(
            client_config(queue),
            broker_connection_retry=False,
            broker_connection_max_retries=0,
            broker_connection_timeout=FAIL_FAST_SECONDS,
            task_publish_retry=False,
            broker_transport_options={
                "socket_connect_timeout": FAIL_FAST_SECONDS,
                "socket_timeout": FAIL_FAST_SECONDS,
                "max_retries": 0,
            },
        )

    def send_job(self, job_id: str, kind: str, params: dict[str, Any]) -> None:
        try:
            self.app.send_task(TASK_NAME, **task_args(job_id, kind, params))
        except BROKER_ERRORS as exc:
            raise self._unavailable(exc) from exc

    def revoke(self, job_id: str) -> None:
        """Best effort: the store already says cancelled, and the worker checks it before starting."""
        try:
            self.app.control.revoke(job_id)
        except BROKER_ERRORS as exc:
            logger.warning("could not revoke task %s: %s", job_id, exc)

    def queued_ids(self) -> set[str]:
        """The ids of the jobs waiting in the queue (not those a worker holds): what a broker that
        restarted without its data no longer has is missing here. Reads the Redis list kombu keeps
        through kombu's own client, so it reads the database kombu writes for every REDIS_URL kombu
        accepts: a password, rediss:// and its ssl_* options, redis+socket:// and its virtual_host."""
        try:
            with self.app.connection_for_write() as connection:
                with connection.default_channel.conn_or_acquire() as client:
                    messages = client.lrange(self.queue, 0, -1)
        except BROKER_ERRORS as exc:
            raise self._unavailable(exc) from exc
        ids = set()
        for message in messages:
            try:
                ids.add(str(json.loads(message)["headers"]["id"]))
            except (ValueError, KeyError, TypeError):
                logger.warning("queue %s holds a message that is not a Celery task; ignored", self.queue)
        return ids

    def mark_predicting(self, key: str, seconds: float) -> None:
        """Set `key` for `seconds` (core.predicting), through kombu's client as `queued_ids` reads; best
        effort: a broker that does not answer only costs training's yielding."""
        try:
            with self.app.connection_for_write() as connection:
                with connection.default_channel.conn_or_acquire() as client:
                    client.set(key, 1, px=int(seconds * 1000))
        except BROKER_ERRORS as exc:
            logger.debug("could not mark predictions waiting: %s", exc)

    def _unavailable(self, exc: BaseException) -> BrokerUnavailable:
        """What the API answers names the setting, never the broker's host or address: those are logged."""
        logger.warning("broker unreachable at %s: %s", self.url, exc)
        return BrokerUnavailable(BROKER_UNREACHABLE)

    def ping(self) -> None:
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=0, timeout=FAIL_FAST_SECONDS)
        except BROKER_ERRORS as exc:
            raise self._unavailable(exc) from exc


@lru_cache(maxsize=4)
def _broker_for(url: str, queue: str) -> Broker:
    return Broker(url, queue=queue)


def get_broker(settings: SettingsDep) -> Broker:
    return _broker_for(settings.REDIS_URL, settings.JOB_QUEUE)


BrokerDep = Annotated[Broker, Depends(get_broker)]
