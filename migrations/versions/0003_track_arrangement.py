"""tracks.arrangement: solo piano or the genre's band around it (band mode)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tracks") as batch:  # batch: SQLite alters by copying the table
        # every track before band mode was solo piano
        batch.add_column(sa.Column("arrangement", sa.String(8), nullable=False, server_default="solo"))


def downgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("arrangement")
