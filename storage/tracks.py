"""Tracks: recording a composed piece with its recipe, reading with access checks, history pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import Forbidden, NotFound
from .models import Platform, Share, Track, TrackStatus, User

T = TypeVar("T")
MAX_PAGE = 50


def pack_tokens(tokens: Sequence[int]) -> bytes:
    """Event ids as uint16 little-endian: two bytes a token, exact."""
    return np.asarray(tokens, dtype="<u2").tobytes()


def unpack_tokens(data: bytes) -> list[int]:
    return np.frombuffer(data, dtype="<u2").tolist()


@dataclass(frozen=True)
class NewTrack:
    """What the job worker knows once a piece is composed and rendered."""

    genre: str
    model_id: str
    checkpoint_sha256: str
    seed: int
    sampling: dict[str, Any]
    tokens: Sequence[int]
    max_seconds: float | None = None
    max_new_tokens: int | None = None
    primer_ref: str | None = None
    instrument: str = "piano"
    arrangement: str = "solo"
    parent_id: int | None = None
    lineage: str | None = None
    duration_s: float = 0.0
    note_count: int = 0
    mp3_key: str | None = None
    midi_key: str | None = None
    png_key: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_before: int | None = None  # pass as `before` for the next (older) page; None at the end
    extra: dict[str, Any] = field(default_factory=dict)


Channel = tuple[Platform | str, str]


async def record_track(session: AsyncSession, owner: User, new: NewTrack) -> Track:
    if new.parent_id is not None and await session.get(Track, new.parent_id) is None:
        raise NotFound(f"track #{new.parent_id} does not exist")
    values = {k: v for k, v in new.__dict__.items() if k != "tokens"}
    track = Track(owner_id=owner.id, tokens=pack_tokens(new.tokens), status=TrackStatus.ready, file_ids={}, **values)
    session.add(track)
    await session.flush()
    return track


async def shared_in(session: AsyncSession, track_id: int, channel: Channel) -> bool:
    platform, chat_id = Platform(channel[0]), str(channel[1])
    return bool(
        await session.scalar(
            select(exists().where(Share.track_id == track_id, Share.platform == platform, Share.chat_id == chat_id))
        )
    )


async def get_track(session: AsyncSession, track_id: int, viewer: User, channel: Channel | None = None) -> Track:
    """A track the viewer may read: their own, or one shared in the channel they are in."""
    track = await session.get(Track, track_id)
    # one message for both: whoever reads it cannot tell a track that does not exist from another's
    unreadable = f"there is no track #{track_id} of yours or shared here"
    if track is None:
        raise NotFound(unreadable)
    if track.owner_id != viewer.id and not (channel and await shared_in(session, track_id, channel)):
        raise Forbidden(unreadable)
    return track


async def history(session: AsyncSession, user: User, limit: int = 10, before: int | None = None) -> Page[Track]:
    """The user's tracks, newest first, a page at a time (keyset: stable while new tracks arrive)."""
    limit = max(1, min(limit, MAX_PAGE))
    q = select(Track).where(Track.owner_id == user.id)
    if before is not None:
        q = q.where(Track.id < before)
    rows = list((await session.execute(q.order_by(Track.id.desc()).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more else None)


async def set_artifacts(session: AsyncSession, track: Track, *, mp3_key: str, midi_key: str, png_key: str) -> None:
    track.mp3_key, track.midi_key, track.png_key = mp3_key, midi_key, png_key
    track.status = TrackStatus.ready


async def cache_file_id(session: AsyncSession, track_id: int, platform: Platform | str, file_id: str) -> None:
    """Remember the platform's id for an uploaded file, so resending needs no upload."""
    track = await session.get(Track, track_id, with_for_update=session.bind.dialect.name == "postgresql")
    if track is None:
        raise NotFound(f"there is no track #{track_id}")
    track.file_ids = {**track.file_ids, Platform(platform).value: file_id}


async def artifact_keys_in_use(session: AsyncSession, keys: set[str], excluding_owner: int | None = None) -> set[str]:
    """Which of `keys` some track (optionally: of another owner) still points at."""
    if not keys:
        return set()
    used: set[str] = set()
    for column in (Track.mp3_key, Track.midi_key, Track.png_key):
        q = select(column).where(column.in_(keys))
        if excluding_owner is not None:
            q = q.where(Track.owner_id != excluding_owner)
        used |= set((await session.execute(q)).scalars())
    return used


async def mark_expired(session: AsyncSession, track_ids: list[int]) -> None:
    if track_ids:
        await session.execute(
            update(Track)
            .where(Track.id.in_(track_ids))
            .values(mp3_key=None, midi_key=None, png_key=None, status=TrackStatus.expired, file_ids={})
        )
