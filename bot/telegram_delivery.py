"""Telegram: getting a job's result to its chat — the progress message, the audio, the score.

A job is followed by a background task of ours (not `Application.create_task`, which stopping the
bot would wait on for as long as a track takes). Each job stores where its result goes
(`ComposeRequest.reply_to`: the chat and the progress message), so when the bot stops mid-job
its followers are simply cancelled, and on the next start `resume_deliveries` re-attaches to every
unfinished job of ours and delivers it exactly as for a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application
from telegram.warnings import PTBDeprecationWarning

from bot.core import track_caption
from bot.limits import Limits
from bot.replies import Button, progress_line, track_buttons
from generator import GeneratorError
from generator.vocab import display_name
from jobs.api import ComposeRequest, JobBackend, Refused
from storage import ArtifactStore, Database, NotFound, Track, User
from storage.jobs import set_reply_to
from storage.shares import record_share
from storage.tracks import cache_file_id

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "telegram"
PERFORMER = "Melomania"
EDIT_INTERVAL_S = 1.5  # Telegram tolerates about one edit a second per chat; stay under it
FOLLOW_TIMEOUT_S = 1200.0  # a job the backend never finishes stops being followed
RETRIES = 4
FAILED = "⚠️ Something went wrong on my side; please try again."


@dataclass(frozen=True)
class Core:
    """What every handler shares: the job backend, the database, the artifact store, the limits."""

    backend: JobBackend
    db: Database
    store: ArtifactStore
    limits: Limits = field(default_factory=Limits)


def core_of(app: Application) -> Core:
    return app.bot_data["core"]


def keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows])


async def with_retries(call: Callable[[], Awaitable[T]]) -> T:
    """A Bot API call, retried on flood waits (429 retry_after) and network errors, with backoff."""
    delay = 1.0
    for _ in range(RETRIES):
        try:
            return await call()
        except RetryAfter as exc:
            with warnings.catch_warnings():  # an int until PTB 23, a timedelta after: both are handled
                warnings.simplefilter("ignore", PTBDeprecationWarning)
                wait = exc.retry_after
            await asyncio.sleep(wait.total_seconds() if isinstance(wait, timedelta) else float(wait))
        except BadRequest:
            raise
        except NetworkError as exc:
            log.warning("Telegram network error, retrying in %g s: %s", delay, exc.__class__.__name__)
            await asyncio.sleep(delay)
            delay *= 2
    return await call()


# --- sending a track ---------------------------------------------------------------------------


async def send_score(app: Application, chat_id: int | str, track: Track) -> None:
    """The piece's MIDI as a document and its piano roll as a photo, after the audio; quietly
    skipped when retention has removed them (the audio is what matters)."""
    core = core_of(app)
    name = f"{display_name(track.genre)}-{track.id}"
    if track.midi_key:
        midi = await asyncio.to_thread(core.store.get, track.midi_key)
        await with_retries(lambda: app.bot.send_document(chat_id, InputFile(midi, filename=f"{name}.mid")))
    if track.png_key:
        png = await asyncio.to_thread(core.store.get, track.png_key)
        await with_retries(lambda: app.bot.send_photo(chat_id, InputFile(png, filename=f"{name}.png")))


async def send_track(app: Application, chat_id: int | str, track: Track, favourite: bool = False) -> Message:
    """The track as an audio message with its caption and buttons; reuses Telegram's file_id
    when it was uploaded before, and remembers it after the first upload."""
    core = core_of(app)
    file_id = (track.file_ids or {}).get(PLATFORM)
    title = f"{display_name(track.genre).capitalize()} #{track.id}"
    if file_id is None:
        if track.mp3_key is None:
            raise NotFound(f"the audio of track #{track.id} has expired; /compose a new one")
        data = await asyncio.to_thread(core.store.get, track.mp3_key)
        audio: str | InputFile = InputFile(data, filename=f"{title.replace(' #', '-')}.mp3")
    else:
        audio = file_id
    sent = await with_retries(
        lambda: app.bot.send_audio(
            chat_id,
            audio=audio,
            title=title,
            performer=PERFORMER,
            duration=round(track.duration_s),
            caption=track_caption(track),
            reply_markup=keyboard(track_buttons(track.id, favourite)),
        )
    )
    if file_id is None and sent.audio is not None:
        await core.db.run(lambda s: cache_file_id(s, track.id, PLATFORM, sent.audio.file_id))
    return sent


# --- following jobs ----------------------------------------------------------------------------


async def start_job(app: Application, chat_id: int, request: ComposeRequest) -> str | None:
    """Submit, post the progress message, remember it as the job's reply_to and follow the job
    in the background; or return the refusal."""
    core = core_of(app)
    try:
        job_id = await core.backend.submit(replace(request, reply_to={"chat_id": chat_id}))
    except (Refused, GeneratorError) as exc:
        return str(exc)
    await post_progress(app, chat_id, job_id)
    return None


async def post_progress(app: Application, chat_id: int, job_id: int) -> None:
    """A new progress message for the job, stored as where its result goes, then followed. The
    message id is stored after the job was accepted (a refused job posts nothing); a restart in
    between finds no message id and posts a new one."""
    core = core_of(app)
    text = progress_line("queued")
    progress = await with_retries(lambda: app.bot.send_message(chat_id, text))
    await core.db.run(lambda s: set_reply_to(s, job_id, {"chat_id": chat_id, "message_id": progress.message_id}))
    follow(app, chat_id, progress.message_id, job_id, shown=text)


def follow(app: Application, chat_id: int, message_id: int, job_id: int, shown: str | None = None) -> None:
    """Follow the job in a task of ours (one per job), cancelled by `stop_following`."""
    follows: dict[int, asyncio.Task[None]] = app.bot_data.setdefault("follows", {})
    if job_id in follows:
        return  # already on its way (a redelivered update that reached the same job)
    task = asyncio.create_task(reported(app, chat_id, message_id, follow_job(app, chat_id, message_id, job_id, shown)))
    follows[job_id] = task
    task.add_done_callback(lambda _: follows.pop(job_id, None))


async def reported(app: Application, chat_id: int, message_id: int, work: Awaitable[None]) -> None:
    """Run a follower; an unexpected error goes to the bot's error handler (which logs it without
    the token) and the progress message says something went wrong, rather than spinning forever."""
    try:
        await work
    except Exception as exc:
        await app.process_error(None, exc)
        with contextlib.suppress(TelegramError):
            await app.bot.edit_message_text(FAILED, chat_id=chat_id, message_id=message_id)


async def follow_job(app: Application, chat_id: int, message_id: int, job_id: int, shown: str | None) -> None:
    """Edit the progress message as the job advances (throttled; the final state always), then
    send the track."""
    core = core_of(app)
    last_edit, final = 0.0, None
    async with asyncio.timeout(FOLLOW_TIMEOUT_S):
        async for event in core.backend.events(job_id):
            text = progress_line(event.kind, event.done, event.total, event.eta_s, event.position)
            if event.kind in ("failed", "cancelled") and event.reason and event.reason != "cancelled":
                text = f"{text}: {event.reason}"
            now = time.monotonic()
            if text != shown and (event.terminal or now - last_edit >= EDIT_INTERVAL_S):
                with contextlib.suppress(BadRequest):  # "message is not modified", or deleted by the user
                    await with_retries(
                        lambda t=text: app.bot.edit_message_text(t, chat_id=chat_id, message_id=message_id)
                    )
                shown, last_edit = text, now
            if event.terminal:
                final = event
    if final is not None and final.kind == "done" and final.track_id is not None:
        track = await core.db.run(lambda s: s.get(Track, final.track_id))
        if chat_id < 0:  # a group or a channel (the Bot API's ids for them are negative)
            # Shared there before it appears, as on Discord: anyone there may reroll it, continue
            # it or keep it as a favourite, and a press the moment it appears already passes.
            owner = await core.db.run(lambda s: s.get(User, track.owner_id))
            here = (PLATFORM, str(chat_id))
            await core.db.run(lambda s: record_share(s, owner, track.id, here, None, here))
        await send_track(app, chat_id, track)
        await core.backend.delivered(job_id)  # the track is the result: a restart must not send it again
        await send_score(app, chat_id, track)
    elif final is not None:
        await core.backend.delivered(job_id)


async def resume_deliveries(app: Application) -> int:
    """On start-up: follow every job of ours whose ending its user has not seen (still going, or
    ended while we were away) and that knows its chat, as if it had just been submitted.
    Returns how many were picked up."""
    core = core_of(app)
    resumed = 0
    for pending in await core.backend.undelivered(PLATFORM):
        reply_to: dict[str, Any] = pending.request.reply_to or {}
        chat_id, message_id = reply_to.get("chat_id"), reply_to.get("message_id")
        if not isinstance(chat_id, int):
            continue  # not submitted from a chat (or before jobs said where they go)
        try:
            if isinstance(message_id, int):
                follow(app, chat_id, message_id, pending.job_id)
            else:  # the bot stopped between accepting the job and posting its progress message
                await post_progress(app, chat_id, pending.job_id)
        except TelegramError as exc:  # e.g. the user blocked the bot meanwhile; the others still go
            log.warning("cannot resume job %s: %s", pending.job_id, exc.__class__.__name__)
            continue
        resumed += 1
    if resumed:
        log.info("resumed delivering %d jobs", resumed)
    return resumed


async def stop_following(app: Application) -> None:
    """On stop: cancel the followers; their jobs stay unfinished and are resumed on the next start."""
    tasks = list(app.bot_data.get("follows", {}).values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
