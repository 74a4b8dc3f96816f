"""The dashboard in a real headless Chromium (Debian's, driven by Playwright for Python) against the
real stack of tests/e2e: uvicorn, a Celery worker, Redis and PostgreSQL. Screenshots of every page go
to $LRCAM_SCREENSHOTS (default: a pytest tmp folder), named in the terminal summary."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # the stack of the e2e tests

from dashboard_support import LAPTOP, watch
from e2e_support import STARTUP_SECONDS, Stack, free_port, running_stack
from stores import (
    POSTGRES_URL,
    postgres_schema_url,
    skip_without_postgres,
)

CHROMIUM = os.environ.get("LRCAM_CHROMIUM", "/usr/bin/chromium")
# headless on a machine without a GPU or network: no sandbox (root in CI), no QUIC or background calls
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "dash-s3cret-0123456789"
SHOTS: list[Path] = []


# Module scope: the stack (a worker training on these CPUs) is gone before tests/e2e starts its own.
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    skip_without_postgres()  # the stack runs on PostgreSQL
    with postgres_schema_url(POSTGRES_URL, prefix="browser") as url:
        with running_stack(tmp_path_factory.mktemp("browser"), url) as running:
            yield running


@pytest.fixture(scope="module")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="module")
def keyed_api(stack: Stack) -> Iterator[Stack]:
    """A second API process on the same store and queue, with API_KEY set."""
    keyed = Stack(url=f"http://127.0.0.1:{free_port()}", env={**stack.env, "API_KEY": API_KEY}, tmp=stack.tmp / "keyed")
    keyed.tmp.mkdir()
    keyed.start_api()
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while True:
            keyed.check_alive()
            try:
                if keyed.get("/ready", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, keyed.log("api")
            time.sleep(0.3)
        yield keyed
    finally:
        keyed.processes["api"].terminate()
        keyed.processes["api"].wait(timeout=20)
        keyed.http.close()


# Module scope too: while sync_playwright is open its event loop runs on this thread, and a later
# test's asyncio.run() would refuse to start ("cannot be called from a running event loop").
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), or set LRCAM_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, stack: Stack):
    """One laptop-sized tab a module's tests walk through in order; it fails a test that made it throw."""
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    watch(opened)
    yield opened
    context.close()


@pytest.fixture(autouse=True)
def no_script_errors(page):
    yield
    assert page.errors == [], "the page threw or its Content-Security-Policy refused something"


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What a module's earlier tests made (job ids) for its later ones."""
    return {}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("LRCAM_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def shoot(screenshots: Path) -> Callable[..., Path]:
    def _shoot(page, name: str, *, full_page: bool = True) -> Path:
        page.wait_for_timeout(300)  # charts finish their resize
        path = screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        SHOTS.append(path)
        return path

    return _shoot


def pytest_terminal_summary(terminalreporter) -> None:
    if SHOTS:
        terminalreporter.write_line(f"dashboard screenshots ({len(SHOTS)}): {SHOTS[0].parent}")
