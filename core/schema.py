"""The job store's schema, kept by Alembic migrations (core/migrations/versions/, one file a
revision). The API and the worker bring a store to the newest revision when they first open it:
an empty store is created, a store made before migrations existed (tables, no revision) is taken as
revision 0001, a store at an older revision is upgraded. One process migrates at a time (a
PostgreSQL advisory lock, a lock file beside an SQLite file). A store at a revision this code does
not know (written by a newer lrcam) is refused, and nothing starts on it.

    python -m core.schema current          the store's revision (DATABASE_URL) and this code's
    python -m core.schema upgrade          to the newest revision
    python -m core.schema downgrade REV    back to REV (run with the lrcam that knows the store's)
"""

from __future__ import annotations

import argparse
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST = "0001"  # the schema as it was before migrations
ADVISORY_LOCK = 0x6C7263616D  # "lrcam": one migration at a time on a PostgreSQL server


class SchemaError(RuntimeError):
    """The store's revision is not one this code knows."""


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def known_revisions() -> list[str]:
    """Oldest first."""
    script = ScriptDirectory(str(MIGRATIONS))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the store at `engine` to the newest revision; SchemaError if it is at an unknown one."""
    known = known_revisions()
    with engine.connect() as connection, _one_at_a_time(connection):
        current = current_revision(connection)
        if current is None and inspect(connection).has_table("jobs"):
            command.stamp(_config(connection), FIRST)  # made by create_all before migrations
            current = FIRST
        if current is not None and current not in known:
            raise SchemaError(
                f"the job store (DATABASE_URL) is at schema revision {current!r}, which this lrcam does not "
                f"know (it knows {', '.join(known)}): a newer lrcam migrated it. Run that version, or with it "
                f"`python -m core.schema downgrade {known[-1]}`"
            )
        if current != known[-1]:
            command.upgrade(_config(connection), "head")
        connection.commit()


@contextmanager
def _one_at_a_time(connection: Connection) -> Iterator[None]:
    """Held until the migration commits: the API and a worker starting together on an empty store
    must not both create its tables."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        yield
        return
    database = connection.engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> None:
    from core.config import get_settings
    from core.db import get_engine

    parser = argparse.ArgumentParser(prog="python -m core.schema", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("current", help="the store's revision and the ones this lrcam knows")
    verbs.add_parser("upgrade", help="to the newest revision")
    verbs.add_parser("downgrade", help="back to a revision").add_argument("revision")
    args = parser.parse_args(argv)
    engine = get_engine(get_settings().DATABASE_URL)
    if args.verb == "upgrade":
        migrate(engine)
    elif args.verb == "downgrade":
        with engine.connect() as connection:
            command.downgrade(_config(connection), args.revision)
            connection.commit()
    with engine.connect() as connection:
        print(f"store at {current_revision(connection)}; this lrcam knows {', '.join(known_revisions())}")


if __name__ == "__main__":
    main()
