"""Users: found or created by their platform identity, idempotently."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .db import insert_ignoring_duplicates
from .models import Platform, User, utcnow

DEFAULT_FIELDS = ("default_genre", "default_temperature", "default_instrument", "default_seconds")


async def get_or_create_user(
    session: AsyncSession, platform: Platform | str, platform_user_id: str | int, display_name: str | None = None
) -> User:
    """The user behind a chat identity, created on first sight; safe under concurrent first sights."""
    platform, pid = Platform(platform), str(platform_user_id)
    await session.execute(
        insert_ignoring_duplicates(session, User, ["platform", "platform_user_id"]).values(
            platform=platform, platform_user_id=pid, display_name=display_name or ""
        )
    )
    user = (
        await session.execute(select(User).where(User.platform == platform, User.platform_user_id == pid))
    ).scalar_one()
    user.last_seen_at = utcnow()
    if display_name:
        user.display_name = display_name
    return user


async def get_user(session: AsyncSession, platform: Platform | str, platform_user_id: str | int) -> User | None:
    return (
        await session.execute(
            select(User).where(User.platform == Platform(platform), User.platform_user_id == str(platform_user_id))
        )
    ).scalar_one_or_none()


async def set_defaults(session: AsyncSession, user: User, **values: object) -> User:
    """Change a user's own defaults (genre, temperature, instrument, seconds); None clears one."""
    unknown = set(values) - {f.removeprefix("default_") for f in DEFAULT_FIELDS}
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    for key, value in values.items():
        setattr(user, f"default_{key}", value)
    return user
