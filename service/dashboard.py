"""The web dashboard: static files shipped in this package (service/static), served at `/` (the page)
and `/static/` (its scripts, styles and the vendored uPlot). Page and assets hold no data and are
public; the page reads everything through the HTTP API with the user's key (never a route of its own)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """`GET /` is the page (hash routing: #/jobs, #/jobs/<id>, ...); `/static` its assets. Mounted at
    /static rather than / so that no API path, and no 404 of an unknown one, is answered by it."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
