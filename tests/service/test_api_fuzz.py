"""Hostile input: schemathesis generates requests for every operation of /openapi.json (with the
API key set) and checks that none gets a 5xx and every response conforms to the schema.

A small fixed budget keeps it in the suite; a longer run (bench/README.md):
    LRCAM_FUZZ_EXAMPLES=500 .venv/bin/pytest -q tests/service/test_api_fuzz.py
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest
import schemathesis
from api_support import FakeBroker
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.config import get_settings
from service.broker import get_broker
from service.main import create_app

API_KEY = "fuzz-key-0123456789"
EXAMPLES = int(os.environ.get("LRCAM_FUZZ_EXAMPLES", "8"))  # per operation; ~12 s for the whole API


@pytest.fixture(scope="module", autouse=True)
def fuzz_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Settings of a fresh store in tmp with API_KEY set; the app reads them per request."""
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp / 'app.db'}",
        "API_KEY": API_KEY,
        "DATA_DIR": str(tmp / "data"),
        "ARTIFACTS_DIR": str(tmp / "artifacts"),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "JOB_QUEUE": "lrcam-fuzz",
        "MAX_UPLOAD_BYTES": "65536",
        "CORS_ORIGINS": "",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(tmp)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


app = create_app()
app.dependency_overrides[get_broker] = lambda: FakeBroker()  # no messages into a real queue
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    # the schema as /openapi.json serves it, read without a request: at import, before the fixture
    # sets API_KEY, the keyless app would refuse the test client's address (service.guards)
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app


CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_operation_answers_5xx_or_off_schema(case: schemathesis.Case) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {API_KEY}"}
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    case.validate_response(response, checks=CHECKS)
