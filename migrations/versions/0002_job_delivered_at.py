"""jobs.delivered_at: a front end's receipt that the user saw how the job ended

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 02:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch: SQLite alters by copying the table
        batch.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
    # jobs that ended before receipts existed were delivered then (or never will be): not again
    op.execute("UPDATE jobs SET delivered_at = finished_at WHERE finished_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("delivered_at")
