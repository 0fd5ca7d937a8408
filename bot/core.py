"""The platform-neutral part of every chat front end: requests built from commands, buttons and
a user's stored defaults, and one-line track listings. Telegram and Discord only translate."""

from __future__ import annotations

from sqlalchemy import select

from bot.grammar import GENRE_NAMES, Compose, UsageError
from bot.replies import caption, child_temperature
from generator.vocab import END, display_name
from jobs.api import ComposeRequest, JobBackend
from storage import ArtifactStore, Database, Job, Platform, Track, User
from storage.favorites import add_favorite, is_favorite, list_favorites, remove_favorite
from storage.jobs import UNFINISHED
from storage.privacy import forget_user
from storage.tracks import Channel, Page, history, unpack_tokens

DEFAULT_SECONDS = 30.0
PRIMER_TOKENS = 500  # how much of a track ➕ Continue carries over


def compose_request(
    platform: str, cmd: Compose, user: User, user_id: str, display_name: str, key: str
) -> ComposeRequest:
    """A /compose command with the user's stored defaults filled in where they typed nothing."""
    genre = cmd.genre or user.default_genre
    if genre is None:
        raise UsageError(f"which genre? choose one of: {GENRE_NAMES} (for example /compose ambient)")
    sampling = dict(cmd.sampling)
    if "temperature" not in sampling and user.default_temperature is not None:
        sampling["temperature"] = user.default_temperature
    return ComposeRequest(
        platform=platform,
        user_id=user_id,
        genre=genre,
        display_name=display_name,
        seconds=cmd.seconds or user.default_seconds or DEFAULT_SECONDS,
        sampling=sampling,
        seed=cmd.seed,
        instrument=cmd.instrument or user.default_instrument or "piano",
        idempotency_key=key,
    )


def child_request(
    platform: str, track: Track, action: str, user_id: str, display_name: str, key: str
) -> ComposeRequest:
    """🔁 / 🔥 / ❄️: the same recipe again, at a new seed (reroll) or a new temperature."""
    sampling = dict(track.sampling)
    sampling["temperature"] = child_temperature(action, float(sampling.get("temperature", 1.0)))
    return ComposeRequest(
        platform=platform,
        user_id=user_id,
        genre=track.genre,
        display_name=display_name,
        seconds=track.max_seconds if track.max_seconds is not None or track.max_new_tokens is None else None,
        tokens=track.max_new_tokens if track.max_seconds is None else None,
        sampling=sampling,
        seed=None if action == "reroll" else track.seed,
        instrument=track.instrument,
        parent_track_id=track.id,
        lineage=action,
        idempotency_key=key,
    )


def continue_request(
    platform: str, track: Track, user: User, user_id: str, display_name: str, key: str
) -> ComposeRequest:
    """➕: a new piece in the track's genre, primed with its last few hundred events."""
    events = [t for t in unpack_tokens(track.tokens)[1:] if t < END]  # after the genre token
    return ComposeRequest(
        platform=platform,
        user_id=user_id,
        genre=track.genre,
        display_name=display_name,
        seconds=track.max_seconds or user.default_seconds or DEFAULT_SECONDS,
        sampling=dict(track.sampling),
        instrument=track.instrument,
        primer=tuple(events[-PRIMER_TOKENS:]),
        primer_ref=f"track:{track.id}",
        parent_track_id=track.id,
        lineage="continue",
        idempotency_key=key,
    )


def midi_continue_request(
    platform: str,
    primer: tuple[int, ...],
    primer_ref: str,
    genre: str | None,
    user: User,
    user_id: str,
    display_name: str,
    key: str,
) -> ComposeRequest:
    """A continuation of a MIDI file the user sent (`primer`, from `jobs.api.primer_from_midi`):
    the genre they named or their default, and their stored length, temperature and instrument."""
    genre = genre or user.default_genre
    if genre is None:
        raise UsageError(f"which genre should it continue in? choose one of: {GENRE_NAMES}, or set a default genre")
    sampling = {} if user.default_temperature is None else {"temperature": user.default_temperature}
    return ComposeRequest(
        platform=platform,
        user_id=user_id,
        genre=genre,
        display_name=display_name,
        seconds=user.default_seconds or DEFAULT_SECONDS,
        sampling=sampling,
        instrument=user.default_instrument or "piano",
        primer=tuple(primer),
        primer_ref=primer_ref,
        lineage="continue",
        idempotency_key=key,
    )


def track_line(track: Track) -> str:
    m, s = divmod(round(track.duration_s), 60)
    temp = track.sampling.get("temperature", 1.0)
    return f"#{track.id} {display_name(track.genre).capitalize()} · {m}:{s:02d} · seed {track.seed} · temp {temp:g}"


async def numbered_page(db: Database, user: User, kind: str, page_no: int, size: int) -> Page[Track] | None:
    """Page `page_no` (from 1) of the user's history or favourites; None past the last page.
    Pages are keyset pages underneath, so a numbered one is reached by walking from the first."""
    fetch = history if kind == "history" else list_favorites

    async def page(s):
        before = None
        for _ in range(page_no - 1):
            earlier = await fetch(s, user, size, before)
            if earlier.next_before is None:
                return None
            before = earlier.next_before
        return await fetch(s, user, size, before)

    return await db.run(page)


def track_caption(track: Track) -> str:
    """The caption of a stored track: genre, number, length, instrument, recipe, lineage."""
    return caption(
        track.id,
        track.genre,
        track.duration_s,
        track.seed,
        track.sampling,
        track.instrument,
        parent_id=track.parent_id,
        lineage=track.lineage,
    )


async def set_favourite(
    db: Database, user: User, track_id: int, favourite: bool | None, channel: Channel | None
) -> bool:
    """⭐ / ★: favourite or un-favourite a track the user can read here; returns the new state.
    None turns it over: in a shared chat the button cannot show each member their own state, so
    it always reads ⭐, and a second press must take the favourite back."""

    async def toggle(s):
        add = favourite if favourite is not None else not await is_favorite(s, user, track_id)
        if add:
            await add_favorite(s, user, track_id, channel)
        else:
            await remove_favorite(s, user, track_id)
        return await is_favorite(s, user, track_id)

    return await db.run(toggle)


async def unfinished_job_ids(db: Database, platform: str, uid: str) -> list[int]:
    """The user's queued and running jobs, newest first (none for someone never seen)."""
    q = (
        select(Job.id)
        .join(User, User.id == Job.user_id)
        .where(User.platform == Platform(platform), User.platform_user_id == uid)
        .where(Job.state.in_(UNFINISHED))
        .order_by(Job.id.desc())
    )

    async def ids(s) -> list[int]:
        return list((await s.scalars(q)).all())

    return await db.run(ids)


async def cancel_newest_job(backend: JobBackend, db: Database, platform: str, uid: str) -> str:
    """/cancel: the user's newest unfinished job is cancelled; the line that says what happened."""
    for job_id in await unfinished_job_ids(db, platform, uid):
        if await backend.cancel(job_id, platform, uid):
            return "✖️ Cancelled your track."
    return "Nothing to cancel: you have no track being composed."


async def forget_everything(backend: JobBackend, db: Database, store: ArtifactStore, platform: str, uid: str) -> str:
    """/forgetme, once confirmed: the user's unfinished jobs are cancelled, then everything of
    theirs is deleted (storage.privacy.forget_user); the line that says so."""
    for job_id in await unfinished_job_ids(db, platform, uid):
        await backend.cancel(job_id, platform, uid)
    gone = await forget_user(db, store, platform, uid)
    return f"🗑 Done: I deleted your settings, favourites and {gone.tracks} tracks."
