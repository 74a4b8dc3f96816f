"""`GET /docs`: the API, browsable and callable in Swagger UI, served from this server alone. Swagger
UI 5.36.0 (it reads OpenAPI 3.1, which FastAPI writes) is vendored from npm's `swagger-ui-dist` with
its licence in service/static/vendor/swagger-ui, not loaded from a CDN, and the page starts it from
a script file, not an inline one: the same Content-Security-Policy as the dashboard holds
(service.guards), on the origin where the dashboard keeps the API key."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

ASSETS = "/static/vendor/swagger-ui"  # mounted with the dashboard's files (service.dashboard)
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
    """The page at /docs, public (it holds no data)."""

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache"})
