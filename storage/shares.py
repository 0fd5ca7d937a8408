"""Shares: a track posted into a channel, readable there by anyone."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .db import insert_ignoring_duplicates
from .models import Platform, Share, Track, User
from .tracks import Channel, Page, get_track


async def record_share(
    session: AsyncSession,
    user: User,
    track_id: int,
    target: Channel,
    message_id: str | int | None = None,
    source: Channel | None = None,
) -> Share:
    """Record that `user` posted a track into `target`. They must be able to read it where they
    are (`source`): their own track, or one shared there. Sharing again into the same channel
    updates the message id instead of duplicating."""
    await get_track(session, track_id, user, source)
    platform, chat_id = Platform(target[0]), str(target[1])
    await session.execute(
        insert_ignoring_duplicates(session, Share, ["track_id", "platform", "chat_id"]).values(
            track_id=track_id,
            platform=platform,
            chat_id=chat_id,
            shared_by=user.id,
            message_id=None if message_id is None else str(message_id),
        )
    )
    share = (
        await session.execute(
            select(Share).where(Share.track_id == track_id, Share.platform == platform, Share.chat_id == chat_id)
        )
    ).scalar_one()
    if message_id is not None:
        share.message_id = str(message_id)
    return share


async def channel_shares(
    session: AsyncSession, channel: Channel, limit: int = 10, before: int | None = None
) -> Page[Track]:
    """Tracks shared into a channel, newest share first."""
    limit = max(1, min(limit, 50))
    q = (
        select(Share.id, Track)
        .join(Track, Track.id == Share.track_id)
        .where(Share.platform == Platform(channel[0]), Share.chat_id == str(channel[1]))
    )
    if before is not None:
        q = q.where(Share.id < before)
    rows = list((await session.execute(q.order_by(Share.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([t for _, t in rows], rows[-1][0] if more else None)
