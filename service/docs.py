"""`GET /docs`: the API, browsable and callable in Swagger UI, served from this server alone. The
Swagger UI files come from the `swagger-ui-bundle` package (pinned in pyproject.toml), not from a
CDN, and the page starts it from a script file, not an inline one: the same Content-Security-Policy
as the dashboard holds (service.guards), on the origin where the dashboard keeps the API key."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs-assets"
PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>lrcam API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="/static/js/docs.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """The page at /docs and Swagger UI's files at /docs-assets, both public (they hold no data)."""

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache"})

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
