"""Hostile input: schemathesis generates requests for every operation of /openapi.json (with the
API key set) and checks that none gets a 5xx and every response conforms to the schema.

Every integer parameter, in the query or the path, is given the edges below half the time: within
its bounds when schemathesis generates valid requests, past them when it generates invalid ones
(which must get a 4xx), so an integer that reaches the store unbounded (an OFFSET past 2**63 is an
OverflowError in SQLite's driver) is found in a few examples, not left to chance. The quick test
runs LRCAM_FUZZ_EXAMPLES (15) examples per operation; the slow one 300 (bench/README.md):
    LRCAM_FUZZ_EXAMPLES=500 .venv/bin/pytest -q tests/service/test_api_fuzz.py
    .venv/bin/pytest -q -m slow tests/service/test_api_fuzz.py
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Iterator
from typing import Annotated

import pytest
import schemathesis
from api_support import FakeBroker
from fastapi import FastAPI, Query
from hypothesis import HealthCheck, find, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
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
EXAMPLES = int(os.environ.get("LRCAM_FUZZ_EXAMPLES", "15"))  # per operation
WIDE_EXAMPLES = 300  # per operation, the slow test
# Integers where code below the API breaks: 32-bit sizes, JSON's exact integers (2**53), the 64-bit
# columns and bound parameters of SQLite and PostgreSQL (OverflowError past 2**63 - 1), and far past
# them (the first is the OFFSET that once answered 500), with their negatives.
EDGES = [0, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 378_240_571_154_815_516_672, 10**30]
EDGES += [-edge for edge in EDGES[1:]]
FUZZ_CONFIG = {
    "dictionaries": {"edges": {"values": EDGES}},
    "generation": {"dictionaries": {"integer": {"dictionary": "edges", "probability": 0.5}}},
    # seconds a response may take: the first spec with a list of augmentations imports albumentations,
    # and with it torch (~5 s, twice that on a busy machine); not 10, which a CI machine exceeded
    "request-timeout": 60,
}


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


def openapi_schema(app: FastAPI) -> schemathesis.schemas.BaseSchema:
    """`app`'s schema as /openapi.json serves it, read without a request (at import, before the
    fixture sets API_KEY, the keyless app would refuse the test client's address: service.guards),
    with the edges given to its integer parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.openapi.from_dict(app.openapi(), config=SchemathesisConfig.from_dict(FUZZ_CONFIG))
    schema.app = app
    return schema


app = create_app()
app.dependency_overrides[get_broker] = lambda: FakeBroker()  # no messages into a real queue
schema = openapi_schema(app)

CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]
FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def no_5xx_and_on_schema(case: schemathesis.Case) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {API_KEY}"}
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=EXAMPLES, **FUZZ)
def test_no_operation_answers_5xx_or_off_schema(case: schemathesis.Case) -> None:
    no_5xx_and_on_schema(case)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=WIDE_EXAMPLES, **FUZZ)
def test_no_operation_answers_5xx_or_off_schema_wide(case: schemathesis.Case) -> None:
    no_5xx_and_on_schema(case)


def unbounded_api() -> FastAPI:
    """The bug the edges are for: an offset with no maximum, handed to SQLite."""
    toy = FastAPI()

    @toy.get("/items")
    def items(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[int]:
        with sqlite3.connect(":memory:") as db:
            return [row[0] for row in db.execute("SELECT 1 LIMIT ? OFFSET ?", (limit, offset))]

    return toy


def test_the_edges_reach_an_integer_without_a_maximum() -> None:
    operation = openapi_schema(unbounded_api())["/items"]["GET"]
    found = find(
        operation.as_strategy(GenerationMode.POSITIVE),
        lambda case: (case.query or {}).get("offset", 0) > 2**63 - 1,
        settings=settings(max_examples=EXAMPLES, database=None, **FUZZ),
    )
    with pytest.raises(OverflowError):  # served, a 500: what the API answered before every integer had a maximum
        found.call()


def test_the_edges_go_past_a_maximum_in_invalid_requests() -> None:
    operation = openapi_schema(unbounded_api())["/items"]["GET"]
    found = find(
        operation.as_strategy(GenerationMode.NEGATIVE),
        lambda case: isinstance(limit := (case.query or {}).get("limit"), int) and limit > 2**63 - 1,
        settings=settings(max_examples=EXAMPLES, database=None, **FUZZ),
    )
    assert found.call().status_code == 422
