"""Exception handlers: a store or broker that does not answer is a 503 naming which one; a job
the store does not know is a 404; an action the job's state forbids is a 409."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.broker import BROKER_UNREACHABLE, BrokerUnavailable
from core.store import JobNotFound, JobStateConflict

logger = logging.getLogger(__name__)

STORE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError)
BROKER_ERRORS = (BrokerUnavailable, KombuOperationalError, RedisError)
# a route's or router's `responses=`: status code -> its OpenAPI response object
Responses = dict[int | str, dict[str, Any]]


STORE_UNREACHABLE = "job store unreachable (DATABASE_URL); the API's log has the details"


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def store_unreachable(exc: BaseException) -> str:
    """The answer for a store that does not answer: the driver's text (host, port, user) is logged only."""
    logger.warning("job store unreachable: %s", first_line(exc))
    return STORE_UNREACHABLE


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("job store unreachable on %s %s: %s", request.method, request.url.path, first_line(exc))
    return JSONResponse({"detail": STORE_UNREACHABLE}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


async def broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("broker unreachable on %s %s: %s", request.method, request.url.path, exc)
    detail = str(exc) if isinstance(exc, BrokerUnavailable) else BROKER_UNREACHABLE  # kombu/redis raised directly
    return JSONResponse({"detail": detail}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


async def job_not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


async def job_state_conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)


def install(app: FastAPI) -> None:
    for store_error in STORE_ERRORS:
        app.add_exception_handler(store_error, store_unavailable)
    for broker_error in BROKER_ERRORS:
        app.add_exception_handler(broker_error, broker_unavailable)
    app.add_exception_handler(JobNotFound, job_not_found)
    app.add_exception_handler(JobStateConflict, job_state_conflict)
