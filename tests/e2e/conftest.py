"""The whole stack for end-to-end tests: a real `uvicorn service.main:app` and a real
`celery -A worker.celery_app worker` as subprocesses, on real Redis (a queue of this session's
own) and PostgreSQL (a schema of this session's own), with tmp DATA_DIR and ARTIFACTS_DIR."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import Stack, running_stack
from stores import POSTGRES_URL, skip_without_postgres
from stores import postgres_schema_url as postgres_schema_url_of


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    skip_without_postgres()  # the whole stack runs on PostgreSQL
    with postgres_schema_url_of(POSTGRES_URL, prefix="e2e") as url:
        yield url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_schema_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e"), postgres_schema_url) as running:
        yield running
