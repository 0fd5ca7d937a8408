"""Forgetting a user, and retention: artifacts of old un-favourited tracks are deleted while their
recipes and tokens stay, so any track can be rendered again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, select

from .artifacts import ArtifactStore
from .db import Database
from .models import Favorite, Platform, Track, TrackStatus, User, utcnow
from .tracks import artifact_keys_in_use, mark_expired


@dataclass(frozen=True)
class Forgotten:
    tracks: int
    files: int


def _keys(tracks) -> set[str]:
    return {k for t in tracks for k in (t.mp3_key, t.midi_key, t.png_key) if k}


async def forget_user(
    db: Database, store: ArtifactStore, platform: Platform | str, platform_user_id: str | int
) -> Forgotten:
    """Delete a user and everything of theirs: tracks, favourites, shares, jobs and the files only
    they used. Rows go first, in one transaction; files after it commits."""

    async def rows(session):
        user = (
            await session.execute(
                select(User).where(User.platform == Platform(platform), User.platform_user_id == str(platform_user_id))
            )
        ).scalar_one_or_none()
        if user is None:
            return 0, set()
        tracks = list((await session.execute(select(Track).where(Track.owner_id == user.id))).scalars())
        keys = _keys(tracks)
        keys -= await artifact_keys_in_use(session, keys, excluding_owner=user.id)
        await session.execute(delete(User).where(User.id == user.id))  # the database cascades the rest
        return len(tracks), keys

    n_tracks, keys = await db.run(rows)
    for key in keys:
        store.delete(key)
    return Forgotten(n_tracks, len(keys))


async def expire_artifacts(db: Database, store: ArtifactStore, older_than_days: float) -> Forgotten:
    """Delete the files of tracks older than N days that nobody favourited; keep their rows."""
    cutoff = utcnow() - timedelta(days=older_than_days)

    async def rows(session):
        favourited = exists().where(Favorite.track_id == Track.id)
        tracks = list(
            (
                await session.execute(
                    select(Track).where(Track.created_at < cutoff, Track.status == TrackStatus.ready, ~favourited)
                )
            ).scalars()
        )
        keys = _keys(tracks)
        await mark_expired(session, [t.id for t in tracks])
        keys -= await artifact_keys_in_use(session, keys)  # still used by a kept track
        return len(tracks), keys

    n_tracks, keys = await db.run(rows)
    for key in keys:
        store.delete(key)
    return Forgotten(n_tracks, len(keys))
