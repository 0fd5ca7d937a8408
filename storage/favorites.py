"""Favourites: idempotent add and remove, a user's list newest first."""

from __future__ import annotations

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from .db import insert_ignoring_duplicates
from .models import Favorite, Track, User
from .tracks import Channel, Page, get_track


async def add_favorite(session: AsyncSession, user: User, track_id: int, channel: Channel | None = None) -> bool:
    """Favourite a track the user may read; True if it was new. Adding twice changes nothing."""
    await get_track(session, track_id, user, channel)
    result = await session.execute(
        insert_ignoring_duplicates(session, Favorite, ["user_id", "track_id"]).values(
            user_id=user.id, track_id=track_id
        )
    )
    return result.rowcount == 1


async def remove_favorite(session: AsyncSession, user: User, track_id: int) -> bool:
    """Un-favourite; True if there was one. Only ever the user's own favourite."""
    result = await session.execute(delete(Favorite).where(Favorite.user_id == user.id, Favorite.track_id == track_id))
    return result.rowcount == 1


async def is_favorite(session: AsyncSession, user: User, track_id: int) -> bool:
    return bool(
        await session.scalar(select(exists().where(Favorite.user_id == user.id, Favorite.track_id == track_id)))
    )


async def list_favorites(session: AsyncSession, user: User, limit: int = 10, before: int | None = None) -> Page[Track]:
    """The user's favourite tracks, most recently favourited first; the cursor is the favourite's id."""
    limit = max(1, min(limit, 50))
    q = select(Favorite.id, Track).join(Track, Track.id == Favorite.track_id).where(Favorite.user_id == user.id)
    if before is not None:
        q = q.where(Favorite.id < before)
    rows = list((await session.execute(q.order_by(Favorite.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([t for _, t in rows], rows[-1][0] if more else None)
