"""Liveness (no auth, no dependencies), readiness (the store and the broker answer) and Prometheus
metrics; the last two behind the API key like every endpoint but /health."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy import text

from core.broker import BrokerUnavailable
from core.db import session_for
from service import telemetry
from service.broker import BrokerDep
from service.deps import SettingsDep, require_api_key
from service.errors import STORE_ERRORS, store_unreachable
from service.schemas import HealthPublic, ReadyPublic

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> HealthPublic:
    """The process is up; checks nothing else."""
    return HealthPublic(status="ok")


@router.get(
    "/ready",
    dependencies=[Depends(require_api_key)],
    responses={
        401: {"description": "API_KEY is set and the request lacks 'Authorization: Bearer <API_KEY>'"},
        503: {"description": "the store or the broker (named) does not answer"},
    },
)
def ready(settings: SettingsDep, broker: BrokerDep) -> ReadyPublic:
    """200 when both the job store and the broker answer; 503 naming each one that does not."""
    problems: dict[str, str] = {}
    try:
        with session_for(settings.DATABASE_URL) as session:
            session.execute(text("SELECT 1"))
    except STORE_ERRORS as exc:
        problems["store"] = store_unreachable(exc)
    try:
        broker.ping()
    except BrokerUnavailable as exc:
        problems["broker"] = str(exc)
    if problems:
        detail = {"status": "not ready", "store": "ok", "broker": "ok"} | problems
        detail["message"] = "; ".join(problems.values())
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail)
    return ReadyPublic(status="ready", store="ok", broker="ok")


@router.get(
    "/metrics",
    dependencies=[Depends(require_api_key)],
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format (service.telemetry)", "content": {"text/plain": {}}},
        401: {"description": "API_KEY is set and the request lacks 'Authorization: Bearer <API_KEY>'"},
    },
)
def metrics(settings: SettingsDep, broker: BrokerDep) -> Response:
    """Requests, predictions, jobs by status, queue depth, job durations, worker heartbeats."""
    return Response(telemetry.exposition(settings, broker), media_type=telemetry.CONTENT_TYPE)
