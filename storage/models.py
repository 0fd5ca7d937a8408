"""The tables: users, tracks, favourites, shares and jobs (SQLAlchemy 2.0 typed models)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only autoincrements INTEGER PRIMARY KEY; Postgres gets BIGINT identities.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    # Named constraints so Alembic migrations are reproducible on every backend.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}  # noqa: RUF012


class Platform(enum.StrEnum):
    telegram = "telegram"
    discord = "discord"
    cli = "cli"


class TrackStatus(enum.StrEnum):
    ready = "ready"  # artifacts on disk
    expired = "expired"  # artifacts removed by retention; recipe and tokens kept to re-render


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


def _enum(e: type[enum.Enum]) -> Enum:
    return Enum(e, native_enum=False, length=16, validate_strings=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    platform: Mapped[Platform] = mapped_column(_enum(Platform))
    platform_user_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    default_genre: Mapped[str | None] = mapped_column(String(16))
    default_temperature: Mapped[float | None]
    default_instrument: Mapped[str | None] = mapped_column(String(32))
    default_seconds: Mapped[int | None]
    banned: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Track(Base):
    __tablename__ = "tracks"
    __table_args__ = (Index(None, "owner_id", "id"),)  # a user's history, newest first, by keyset

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="SET NULL"), index=True)
    lineage: Mapped[str | None] = mapped_column(String(16))  # reroll, hotter, cooler, continue
    genre: Mapped[str] = mapped_column(String(16))
    # the recipe: everything needed to compose the same piece again
    model_id: Mapped[str] = mapped_column(String(128))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    sampling: Mapped[dict[str, Any]]
    max_seconds: Mapped[float | None]
    max_new_tokens: Mapped[int | None]
    primer_ref: Mapped[str | None] = mapped_column(String(256))
    instrument: Mapped[str] = mapped_column(String(32), default="piano")
    arrangement: Mapped[str] = mapped_column(String(8), default="solo", server_default="solo")  # or band
    # the result
    status: Mapped[TrackStatus] = mapped_column(_enum(TrackStatus), default=TrackStatus.ready)
    duration_s: Mapped[float] = mapped_column(default=0.0)
    note_count: Mapped[int] = mapped_column(default=0)
    tokens: Mapped[bytes] = mapped_column(LargeBinary)  # uint16 little-endian event ids
    mp3_key: Mapped[str | None] = mapped_column(String(80))
    midi_key: Mapped[str | None] = mapped_column(String(80))
    png_key: Mapped[str | None] = mapped_column(String(80))
    file_ids: Mapped[dict[str, Any]] = mapped_column(default=dict)  # platform → cached upload id
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship(lazy="raise")


class Favorite(Base):
    __tablename__ = "favorites"
    __table_args__ = (UniqueConstraint("user_id", "track_id"), Index(None, "user_id", "id"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Share(Base):
    __tablename__ = "shares"
    __table_args__ = (
        UniqueConstraint("track_id", "platform", "chat_id"),
        Index(None, "platform", "chat_id", "id"),  # a channel's shares
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    platform: Mapped[Platform] = mapped_column(_enum(Platform))
    chat_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(64))
    shared_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index(None, "state", "id"), Index(None, "user_id", "state"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    request: Mapped[dict[str, Any]]
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.queued)
    progress: Mapped[float] = mapped_column(default=0.0)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]  # when a front end showed the ending to the user
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
