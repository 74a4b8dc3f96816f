"""The job store as it was before migrations: jobs, their epoch metrics, artifacts and checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False, index=True),
        sa.Column("started_at", WHEN),
        sa.Column("finished_at", WHEN),
        sa.Column("heartbeat_at", WHEN),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("checkpoint_id", sa.String(32)),
        sa.Column("result", sa.JSON()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255)),
    )
    op.create_table(
        "epoch_metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.UniqueConstraint("job_id", "epoch", name="uq_epoch_metrics_job_epoch"),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("model", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("test_acc", sa.Double()),
        sa.Column("epoch", sa.Integer()),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in ("checkpoints", "artifacts", "epoch_metrics", "jobs"):
        op.drop_table(table)
