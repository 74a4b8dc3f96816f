"""The lrcam API: `uvicorn service.main:app`.

Importing this module never imports torch (the predictor loads it on the first /predict)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import errors
from service.config import get_settings
from service.db import ensure_schema, get_engine
from service.deps import require_api_key
from service.routers import artifacts, catalogue, checkpoints, health, jobs, predict

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    try:
        ensure_schema(get_engine(settings.DATABASE_URL))
    except errors.STORE_ERRORS as exc:  # keep serving: /ready says 503, tables are created on first use
        logger.error("job store unreachable at startup: %s", exc)
    yield


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="lrcam",
        version="0.1.0",
        description="Trains image classifiers (CIFAR ResNet18, ResNet9), runs LR range tests, explains "
        "models with GradCAM. Jobs run on Celery workers; the job store is the source of truth.",
        lifespan=lifespan,
    )
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
        )
    errors.install(app)
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    for router in (jobs.router, artifacts.router, checkpoints.router, predict.router, catalogue.router):
        app.include_router(router, dependencies=protected)
    return app


app = create_app()
