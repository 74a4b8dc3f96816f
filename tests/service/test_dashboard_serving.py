"""The dashboard as the API serves it: the page at / and its assets at /static, public even with
API_KEY set (they hold no data), shadowing no API route; the job fields its list shows."""

from __future__ import annotations

import re

from api_support import FakeBroker, TestClient, make_client, put_job
from sqlalchemy.orm import Session

from core import store
from service.dashboard import STATIC_DIR


def test_the_page_and_every_asset_it_names_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/js/main.js", "/static/app.css", "/static/vendor/uPlot.iife.min.js"} <= set(assets)
    modules = [f"/static/js/{path.name}" for path in (STATIC_DIR / "js").glob("*.js")]
    for asset in assets + modules:
        response = client.get(asset)
        assert response.status_code == 200 and response.content, asset
    assert (
        client.get("/static/js/main.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    assert (STATIC_DIR / "vendor" / "uPlot.LICENSE").read_text().startswith("The MIT License")


def test_every_module_the_scripts_import_exists() -> None:
    for script in (STATIC_DIR / "js").glob("*.js"):
        for name in re.findall(r'from "\./([\w.]+)"', script.read_text()):
            assert (STATIC_DIR / "js" / name).is_file(), f"{script.name} imports a missing {name}"


def test_page_and_assets_are_public_but_data_is_not(configure) -> None:
    configure(API_KEY="s3cret-key-0123456789")
    with make_client(FakeBroker()) as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/js/api.js").status_code == 200
        assert client.get("/openapi.json").status_code == 200  # the form reads its fields from it
        assert client.get("/jobs").status_code == 401 and client.get("/models").status_code == 401


def test_the_dashboard_shadows_no_api_route(client: TestClient) -> None:
    unknown = client.get("/no-such-route")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    assert client.post("/jobs/x").status_code == 405  # an API path, not a static file
    assert client.get("/jobs").status_code == 200 and client.get("/health").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    for escape in ("/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/..%2fdashboard.py"):
        assert client.get(escape).status_code == 404, escape  # never a file outside service/static
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is no API operation


def test_jobs_carry_their_best_epoch_and_resolved_lr_once_ended(client: TestClient, session: Session) -> None:
    params = {"dataset": {"name": "fashion_mnist"}, "optimizer": {"lr": "auto", "lr_finder_job": "f"}}
    job = put_job(session, status="running", params=params)
    running = client.get(f"/jobs/{job.id}").json()
    assert running["best"] is None and running["lr"] is None
    result = {"best": {"epoch": 2, "test_acc": 0.61}, "per_class_accuracy": {}, "stop_reason": "completed", "lr": 0.28}
    store.finish_job(session, job.id, status="succeeded", result=result)
    ended = client.get(f"/jobs/{job.id}").json()
    assert ended["best"] == {"epoch": 2, "test_acc": 0.61} and ended["lr"] == 0.28
    listed = client.get("/jobs").json()["jobs"][0]
    assert listed["id"] == job.id and listed["best"]["test_acc"] == 0.61 and listed["lr"] == 0.28
