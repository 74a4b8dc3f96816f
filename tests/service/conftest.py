"""Fixtures of the API and worker tests: settings on a fresh store in tmp (SQLite, or PostgreSQL in
a schema of its own), a TestClient, a recording broker for routing tests, and jobs put in any
state through the store, as a worker would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import FakeBroker, TestClient, make_client
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from stores import POSTGRES_URL, postgres_schema_url, skip_without_postgres

from core.config import Settings, get_settings
from core.db import session_for


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        with create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2}).connect():
            return True
    except OperationalError:
        return False


@pytest.fixture
def postgres_url(postgres_available: bool) -> Iterator[str]:
    """A fresh PostgreSQL store: a schema of its own (in search_path), dropped afterwards."""
    skip_without_postgres()
    if not postgres_available:
        pytest.fail(f"PostgreSQL is not reachable at {make_url(POSTGRES_URL).render_as_string(hide_password=True)}")
    with postgres_schema_url(POSTGRES_URL, prefix="t") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'app.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Environment settings on a fresh SQLite store in tmp_path; change them with `configure`."""
    values = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "JOB_QUEUE": f"lrcam-test-{uuid.uuid4().hex[:8]}",
        "DATA_DIR": str(tmp_path / "data"),
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "METRICS_CACHE_SECONDS": "0",  # each test reads what it just wrote; the cache has tests of its own
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("API_KEY", "CORS_ORIGINS", "JOB_LEASE_SECONDS", "MAX_UPLOAD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def configure(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    """configure(NAME=value, ...) -> the new Settings (the environment changed, the cache cleared)."""

    def _configure(**values: Any) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()
        return get_settings()

    return _configure


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def client(settings: Settings, broker: FakeBroker) -> Iterator[TestClient]:
    with make_client(broker) as test_client:
        yield test_client


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    with session_for(settings.DATABASE_URL) as db_session:
        yield db_session
