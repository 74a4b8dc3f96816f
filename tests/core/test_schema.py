"""The job store's schema under Alembic: the migrations build exactly the models' tables, a store of
the first revision (or of before migrations) is upgraded with its data, two processes migrating one
empty store at once do not collide, and a revision this code does not know stops the API and the
worker from starting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from api_support import FakeBroker, make_client
from sqlalchemy import inspect, text

from core import store
from core.db import Base, get_engine, session_for
from core.schema import SchemaError, _config, current_revision, known_revisions, migrate

REPO = Path(__file__).resolve().parents[2]
OLD_JOB = (
    "INSERT INTO jobs (id, kind, status, params, created_at, progress, cancel_requested, attempts) VALUES "
    "('0123456789abcdef0123456789abcdef', 'train', 'succeeded', '{\"epochs\": 2}', '2026-11-20 10:00:00', "
    "'{}', false, 1)"
)


def at_revision(url: str, revision: str) -> None:
    with get_engine(url).connect() as connection:
        command.upgrade(_config(connection), revision)
        connection.commit()


def test_the_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = get_engine(database_url)
    migrate(engine)
    with engine.connect() as connection:
        assert current_revision(connection) == known_revisions()[-1]
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_store_of_the_first_revision_is_upgraded_with_its_data(database_url: str) -> None:
    at_revision(database_url, "0001")
    with get_engine(database_url).begin() as connection:
        connection.execute(text(OLD_JOB))
    with session_for(database_url) as session:  # what the API and the worker open
        job = store.get_job(session, "0123456789abcdef0123456789abcdef")
        assert job is not None and job.params == {"epochs": 2} and job.progress_at is None
        assert "leases" in inspect(session.get_bind()).get_table_names()
        assert current_revision(session.connection()) == known_revisions()[-1]


def test_a_store_made_before_migrations_is_taken_as_the_first_revision(database_url: str) -> None:
    at_revision(database_url, "0001")
    with get_engine(database_url).begin() as connection:
        connection.execute(text(OLD_JOB))
        connection.execute(text("DROP TABLE alembic_version"))  # as create_all left it
    migrate(get_engine(database_url))
    with session_for(database_url) as session:
        assert store.get_job(session, "0123456789abcdef0123456789abcdef") is not None


MIGRATE = (
    "import sys; from core.db import get_engine; from core.schema import migrate; "
    "migrate(get_engine(sys.argv[1])); print('ok')"
)


def test_two_processes_migrating_one_empty_store_at_once_do_not_collide(database_url: str) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, database_url],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    with get_engine(database_url).connect() as connection:
        assert current_revision(connection) == known_revisions()[-1]


def unknown_revision(url: str) -> None:
    migrate(get_engine(url))
    with get_engine(url).begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))


def test_a_revision_this_code_does_not_know_stops_the_api(configure, database_url: str) -> None:
    unknown_revision(database_url)
    with pytest.raises(SchemaError, match=r"'9999'.*python -m core.schema downgrade"):
        migrate(get_engine(database_url))
    configure(DATABASE_URL=database_url)
    with pytest.raises(SchemaError), make_client(FakeBroker()):
        pass


def test_a_revision_this_code_does_not_know_stops_the_worker(configure, sqlite_url: str) -> None:
    unknown_revision(sqlite_url)
    configure(DATABASE_URL=sqlite_url)
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "--pool=solo",
            "-Q",
            "lrcam-schema-test",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode != 0
    assert "python -m core.schema downgrade" in worker.stdout + worker.stderr
