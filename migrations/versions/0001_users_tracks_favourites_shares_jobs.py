"""users, tracks, favourites, shares, jobs

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 23:22:12.977173
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "platform",
            sa.Enum("telegram", "discord", "cli", name="platform", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("platform_user_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("default_genre", sa.String(length=16), nullable=True),
        sa.Column("default_temperature", sa.Double(), nullable=True),
        sa.Column("default_instrument", sa.String(length=32), nullable=True),
        sa.Column("default_seconds", sa.Integer(), nullable=True),
        sa.Column("banned", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("platform", "platform_user_id", name=op.f("uq_users_platform_platform_user_id")),
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("lineage", sa.String(length=16), nullable=True),
        sa.Column("genre", sa.String(length=16), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("sampling", sa.JSON(), nullable=False),
        sa.Column("max_seconds", sa.Double(), nullable=True),
        sa.Column("max_new_tokens", sa.Integer(), nullable=True),
        sa.Column("primer_ref", sa.String(length=256), nullable=True),
        sa.Column("instrument", sa.String(length=32), nullable=False),
        sa.Column(
            "status", sa.Enum("ready", "expired", name="trackstatus", native_enum=False, length=16), nullable=False
        ),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("note_count", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.LargeBinary(), nullable=False),
        sa.Column("mp3_key", sa.String(length=80), nullable=True),
        sa.Column("midi_key", sa.String(length=80), nullable=True),
        sa.Column("png_key", sa.String(length=80), nullable=True),
        sa.Column("file_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_tracks_owner_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["tracks.id"], name=op.f("fk_tracks_parent_id_tracks"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracks")),
    )
    with op.batch_alter_table("tracks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tracks_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tracks_owner_id_id"), ["owner_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tracks_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "favorites",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("track_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_favorites_track_id_tracks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_favorites_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_favorites")),
        sa.UniqueConstraint("user_id", "track_id", name=op.f("uq_favorites_user_id_track_id")),
    )
    with op.batch_alter_table("favorites", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_favorites_track_id"), ["track_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_favorites_user_id_id"), ["user_id", "id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("queued", "running", "done", "failed", "cancelled", name="jobstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("progress", sa.Double(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("track_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["track_id"], ["tracks.id"], name=op.f("fk_jobs_track_id_tracks"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_jobs_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_state_id"), ["state", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_user_id_state"), ["user_id", "state"], unique=False)

    op.create_table(
        "shares",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("track_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "platform",
            sa.Enum("telegram", "discord", "cli", name="platform", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("chat_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("shared_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["shared_by"], ["users.id"], name=op.f("fk_shares_shared_by_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_shares_track_id_tracks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shares")),
        sa.UniqueConstraint("track_id", "platform", "chat_id", name=op.f("uq_shares_track_id_platform_chat_id")),
    )
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shares_platform_chat_id_id"), ["platform", "chat_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_shares_shared_by"), ["shared_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shares_shared_by"))
        batch_op.drop_index(batch_op.f("ix_shares_platform_chat_id_id"))

    op.drop_table("shares")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_user_id_state"))
        batch_op.drop_index(batch_op.f("ix_jobs_state_id"))

    op.drop_table("jobs")
    with op.batch_alter_table("favorites", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_favorites_user_id_id"))
        batch_op.drop_index(batch_op.f("ix_favorites_track_id"))

    op.drop_table("favorites")
    with op.batch_alter_table("tracks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tracks_parent_id"))
        batch_op.drop_index(batch_op.f("ix_tracks_owner_id_id"))
        batch_op.drop_index(batch_op.f("ix_tracks_created_at"))

    op.drop_table("tracks")
    op.drop_table("users")
