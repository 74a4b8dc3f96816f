"""Alembic's environment for the job store: always run from core.schema, which hands it an open
connection (`config.attributes["connection"]`); there is no alembic.ini."""

from __future__ import annotations

from alembic import context

from core.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
