"""The lrcam API: `uvicorn service.main:app`.

Importing this module never imports torch (the predictor loads it on the first /predict)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from core import logs
from core.config import get_settings
from core.db import ensure_schema, get_engine
from core.niceness import lower_priority
from service import dashboard, docs, errors, predictions
from service.archive_upload import MULTIPART_OVERHEAD_BYTES
from service.batching import PredictBatcher
from service.broker import get_broker
from service.deps import FailedAuths, require_api_key
from service.errors import Responses
from service.guards import Guard, SecurityHeaders
from service.limits import ClientUploads, PredictGate
from service.middleware import RequestContext
from service.predicting import PredictingMarker
from service.reconciler import reconcile_forever
from service.routers import (
    artifacts,
    catalogue,
    checkpoints,
    datasets,
    examples,
    explanations,
    health,
    job_logs,
    jobs,
    label_issues,
    predict,
)

logger = logging.getLogger(__name__)
PROTECTED_ERRORS: Responses = {
    400: {"description": "the request could not be parsed (e.g. a body that is not JSON)"},
    401: {"description": "API_KEY is set and the request lacks 'Authorization: Bearer <API_KEY>'"},
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    logs.configure(settings.LOG_FORMAT)
    if settings.API_NICE:
        lower_priority(settings.API_NICE, setting="API_NICE")
    try:
        ensure_schema(get_engine(settings.DATABASE_URL))
    except errors.STORE_ERRORS as exc:  # keep serving: /ready says 503, tables are created on first use
        logger.error("job store unreachable at startup: %s", exc)
    override = app.dependency_overrides.get(get_broker)  # tests swap the broker for a fake
    broker = override() if override else get_broker(settings)
    if settings.YIELD_TO_PREDICTIONS:
        app.state.predicting = PredictingMarker(broker, queue=settings.JOB_QUEUE)
    reconciler = asyncio.create_task(reconcile_forever(settings, broker), name="reconciler")
    try:
        yield
    finally:
        reconciler.cancel()
        with suppress(asyncio.CancelledError):
            await reconciler


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="lrcam",
        version="0.1.0",
        description="Trains image classifiers (CIFAR ResNet18, ResNet9), runs LR range tests, explains "
        "models with GradCAM. Jobs run on Celery workers; the job store is the source of truth.",
        lifespan=lifespan,
        docs_url=None,  # served by service.docs: Swagger UI from the package index, no CDN, no inline script
        redoc_url=None,
    )
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    errors.install(app)
    app.add_middleware(Guard, settings=get_settings)
    # outside the guard: bodies are bounded before CORS, auth or parsing see them, and refusals are counted
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.MAX_BODY_BYTES,
        max_predict_bytes=settings.MAX_PREDICT_BYTES,
        max_dataset_bytes=settings.MAX_DATASET_BYTES + MULTIPART_OVERHEAD_BYTES,
    )
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries them, a 413 or a 500 included
    app.state.failed_auths = FailedAuths()
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    routers = (
        jobs.router,
        artifacts.router,
        examples.router,
        explanations.router,
        label_issues.router,
        job_logs.router,
        checkpoints.router,
        catalogue.router,
        datasets.router,
    )
    for router in routers:
        app.include_router(router, dependencies=protected, responses=PROTECTED_ERRORS)
    app.state.predict_gate = PredictGate(
        running=settings.MAX_CONCURRENT_PREDICTS, queue=settings.PREDICT_QUEUE, wait=settings.PREDICT_WAIT_SECONDS
    )
    app.state.client_uploads = ClientUploads()
    app.state.predicting = None  # a PredictingMarker with YIELD_TO_PREDICTIONS, from the lifespan on
    app.state.predict_batcher = PredictBatcher(
        predictions.run_batch,
        executor=predictions.MODEL_THREAD,
        max_images=settings.PREDICT_MAX_BATCH,
        delay=settings.PREDICT_BATCH_DELAY_MS / 1000,
        room=app.state.predict_gate.free,
    )
    busy: Responses = {
        408: {"description": "the body did not arrive within PREDICT_BODY_SECONDS"},
        429: {
            "description": "MAX_CONCURRENT_PREDICTS predictions run and PREDICT_QUEUE wait, a request waited "
            "PREDICT_WAIT_SECONDS for a slot, or its client has MAX_UPLOADS_PER_CLIENT requests in flight"
        },
    }
    app.include_router(predict.router, dependencies=protected, responses=PROTECTED_ERRORS | busy)
    docs.install(app)
    dashboard.install(app)  # last: the page at / and its assets at /static, both public
    return app


app = create_app()
