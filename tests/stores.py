"""The PostgreSQL the tests use, and a schema of a test's own: created, put in search_path,
dropped afterwards.

LRCAM_TEST_POSTGRES_URL overrides the server (.ci/postgres sets it on a server with password
authentication); LRCAM_SKIP_POSTGRES, when set, is why this machine has none: the PostgreSQL tests
are then skipped with that reason instead of failing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get("LRCAM_TEST_POSTGRES_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def skip_without_postgres() -> None:
    """Skip the calling test when the runner said it has no PostgreSQL (LRCAM_SKIP_POSTGRES)."""
    reason = os.environ.get("LRCAM_SKIP_POSTGRES")
    if reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")


@contextmanager
def postgres_schema_url(postgres_url: str, *, prefix: str) -> Iterator[str]:
    """Yields a URL whose connections use a fresh schema; the schema is dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
