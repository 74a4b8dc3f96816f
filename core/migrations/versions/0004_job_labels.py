"""A job's name, tags and note: the user's own labels for finding and telling runs apart (they never
change what trains).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("name", sa.String(100)))
        jobs.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
        jobs.add_column(sa.Column("note", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("note")
        jobs.drop_column("tags")
        jobs.drop_column("name")
