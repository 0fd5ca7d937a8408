"""The Telegram front end (python-telegram-bot v22): one handler per intent, each short.

Handlers only translate: a Telegram update becomes text for `bot.grammar.parse` or a button press
for `bot.replies.parse_button`; a request goes to the job backend; the core's captions, progress
lines and buttons become Telegram messages and inline keyboards. Composing happens in the job
backend; following a job (editing the progress message, sending the track) runs as a background
task, so a handler returns at once.

    app = build_application(token, runner, db, store)
    app.run_polling()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import select
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters
from telegram.warnings import PTBDeprecationWarning

from bot.core import (
    DEFAULT_SECONDS,
    child_request,
    compose_request,
    continue_request,
    numbered_page,
    set_favourite,
    track_caption,
    track_line,
)
from bot.grammar import (
    GENRE_NAMES,
    Compose,
    Page,
    SettingsCommand,
    ShareCommand,
    TrackCommand,
    UsageError,
    parse,
)
from bot.replies import Button, parse_button, progress_line, track_buttons
from generator import GeneratorError
from generator.vocab import display_name
from jobs.api import ComposeRequest, JobBackend, Refused
from storage import ArtifactStore, Database, Forbidden, Job, JobState, NotFound, Track, User
from storage.privacy import forget_user
from storage.shares import record_share
from storage.tracks import cache_file_id, get_track
from storage.users import get_or_create_user, set_defaults

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "telegram"
PERFORMER = "Melomania"
EDIT_INTERVAL_S = 1.5  # Telegram tolerates about one edit a second per chat; stay under it
FOLLOW_TIMEOUT_S = 1200.0  # a job the backend never finishes stops being followed
PAGE_SIZE = 10
RETRIES = 4
NEW_MESSAGES = filters.UpdateType.MESSAGE  # not edits (editing a /compose must not compose again), not channel posts

COMMANDS = {
    "compose": "compose a track: /compose jazz 0.9 60s",
    "genres": "the genres you can ask for",
    "history": "your tracks, newest first: /history 2",
    "favorites": "your favourite tracks",
    "continue": "continue a track: /continue 42",
    "share": "post a track into a channel: /share 42 @channel",
    "settings": "your defaults: /settings genre=jazz temp=0.9",
    "cancel": "stop the track being composed",
    "forgetme": "delete everything I keep about you",
    "help": "how to talk to me",
}
HELP = (
    "🎹 I compose piano music.\n\n"
    "/compose ambient — a track (genres: {genres})\n"
    "/compose jazz temp=0.9 len=60 seed=7 — with options; also topk, topp, k, rp, rps, instrument\n"
    "/compose jazz 0.9 60s — the same, shorter\n"
    "Under each track: 🔁 reroll, 🔥 hotter, ❄️ cooler, ⭐ favourite, ➕ continue, 📤 share.\n\n"
    "/history [page] · /favorites · /continue 42 · /share 42 @channel\n"
    "/settings genre=jazz temp=0.9 len=60 instrument=strings — your defaults\n"
    "/cancel — stop the current track · /forgetme — delete your data"
)


@dataclass(frozen=True)
class Core:
    """What every handler shares: the job backend, the database and the artifact store."""

    backend: JobBackend
    db: Database
    store: ArtifactStore


def core_of(context: ContextTypes.DEFAULT_TYPE) -> Core:
    return context.application.bot_data["core"]


# --- translating to Telegram -------------------------------------------------------------------


def keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows])


def who(update: Update) -> tuple[str, str]:
    """The sender's id and name (handlers only see new messages and button presses, which have one)."""
    user = update.effective_user
    return str(user.id), user.full_name


def here(update: Update) -> tuple[str, str]:
    return (PLATFORM, str(update.effective_chat.id))


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


async def say(update: Update, text: str) -> None:
    await with_retries(lambda: update.effective_message.reply_text(text))


async def known_user(core: Core, update: Update) -> User:
    uid, name = who(update)
    return await core.db.run(lambda s: get_or_create_user(s, PLATFORM, uid, name))


async def job_exists(core: Core, key: str) -> bool:
    return await core.db.run(lambda s: s.scalar(select(Job.id).where(Job.idempotency_key == key))) is not None


async def send_score(context: ContextTypes.DEFAULT_TYPE, chat_id: int | str, track: Track) -> None:
    """The piece's MIDI as a document and its piano roll as a photo, after the audio; quietly
    skipped when retention has removed them (the audio is what matters)."""
    core = core_of(context)
    name = f"{display_name(track.genre)}-{track.id}"
    if track.midi_key:
        midi = await asyncio.to_thread(core.store.get, track.midi_key)
        await with_retries(lambda: context.bot.send_document(chat_id, InputFile(midi, filename=f"{name}.mid")))
    if track.png_key:
        png = await asyncio.to_thread(core.store.get, track.png_key)
        await with_retries(lambda: context.bot.send_photo(chat_id, InputFile(png, filename=f"{name}.png")))


async def send_track(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int | str, track: Track, favourite: bool = False
) -> Message:
    """The track as an audio message with its caption and buttons; reuses Telegram's file_id
    when it was uploaded before, and remembers it after the first upload."""
    core = core_of(context)
    file_id = (track.file_ids or {}).get(PLATFORM)
    title = f"{display_name(track.genre).capitalize()} #{track.id}"
    if file_id is None:
        if track.mp3_key is None:
            raise NotFound(f"the audio of track #{track.id} has expired; /compose a new one")
        data = await asyncio.to_thread(core.store.get, track.mp3_key)
        audio: str | InputFile = InputFile(data, filename=f"{title.replace(' #', '-')}.mp3")
    else:
        audio = file_id
    text = track_caption(track)
    sent = await with_retries(
        lambda: context.bot.send_audio(
            chat_id,
            audio=audio,
            title=title,
            performer=PERFORMER,
            duration=round(track.duration_s),
            caption=text,
            reply_markup=keyboard(track_buttons(track.id, favourite)),
        )
    )
    if file_id is None and sent.audio is not None:
        await core.db.run(lambda s: cache_file_id(s, track.id, PLATFORM, sent.audio.file_id))
    return sent


async def start_job(
    context: ContextTypes.DEFAULT_TYPE, update: Update, chat_id: int, request: ComposeRequest
) -> str | None:
    """Submit, post the progress message and follow the job in the background; or the refusal."""
    core = core_of(context)
    try:
        job_id = await core.backend.submit(request)
    except (Refused, GeneratorError) as exc:
        return str(exc)
    progress = await with_retries(lambda: context.bot.send_message(chat_id, progress_line("queued")))
    context.application.create_task(follow_job(context, chat_id, progress, job_id), update=update)
    return None


async def follow_job(context: ContextTypes.DEFAULT_TYPE, chat_id: int, progress: Message, job_id: int) -> None:
    """Edit the progress message as the job advances (throttled; the final state always), then
    send the track."""
    core = core_of(context)
    shown, last_edit = progress.text, 0.0
    final = None
    async with asyncio.timeout(FOLLOW_TIMEOUT_S):
        async for event in core.backend.events(job_id):
            text = progress_line(event.kind, event.done, event.total, event.eta_s, event.position)
            if event.kind in ("failed", "cancelled") and event.reason and event.reason != "cancelled":
                text = f"{text}: {event.reason}"
            now = time.monotonic()
            if text != shown and (event.terminal or now - last_edit >= EDIT_INTERVAL_S):
                with contextlib.suppress(BadRequest):  # "message is not modified", or deleted by the user
                    await with_retries(
                        lambda t=text: context.bot.edit_message_text(t, chat_id=chat_id, message_id=progress.message_id)
                    )
                shown, last_edit = text, now
            if event.terminal:
                final = event
    if final is not None and final.kind == "done" and final.track_id is not None:
        track = await core.db.run(lambda s: s.get(Track, final.track_id))
        await send_track(context, chat_id, track)
        await send_score(context, chat_id, track)


# --- handlers, one per intent ------------------------------------------------------------------


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await known_user(core_of(context), update)
    await say(update, "Hello! " + HELP.format(genres=GENRE_NAMES))


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await say(update, HELP.format(genres=GENRE_NAMES))


async def genres(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await say(update, f"Genres: {GENRE_NAMES}.\nFor example: /compose ambient or /compose jazz 0.9 60s")


async def compose(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context)
    key = f"{PLATFORM}:{update.update_id}"
    if await job_exists(core, key):
        return  # a redelivered update: the first delivery is composing it
    uid, name = who(update)
    try:
        cmd = parse(update.effective_message.text or "")
        if not isinstance(cmd, Compose):
            raise UsageError("try /compose ambient")
        user = await known_user(core, update)
        request = compose_request(PLATFORM, cmd, user, uid, name, key)
    except UsageError as exc:
        await say(update, f"🤔 {exc}")
        return
    refusal = await start_job(context, update, update.effective_chat.id, request)
    if refusal:
        await say(update, f"🙅 {refusal}")


async def continue_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context)
    key = f"{PLATFORM}:{update.update_id}"
    if await job_exists(core, key):
        return
    uid, name = who(update)
    try:
        cmd = parse(update.effective_message.text or "")
        if not isinstance(cmd, TrackCommand) or cmd.track_id is None:
            raise UsageError("/continue takes a track number, like /continue 42")
        user = await known_user(core, update)
        track = await core.db.run(lambda s: get_track(s, cmd.track_id, user, here(update)))
    except (UsageError, NotFound, Forbidden) as exc:
        await say(update, f"🤔 {exc}")
        return
    refusal = await start_job(
        context, update, update.effective_chat.id, continue_request(PLATFORM, track, user, uid, name, key)
    )
    if refusal:
        await say(update, f"🙅 {refusal}")


async def history_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await list_tracks(update, context, "history")


async def favorites_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await list_tracks(update, context, "favorites")


async def list_tracks(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str) -> None:
    core = core_of(context)
    try:
        cmd = parse(update.effective_message.text or "")
    except UsageError as exc:
        await say(update, f"🤔 {exc}")
        return
    page_no = cmd.page if isinstance(cmd, Page) else 1
    user = await known_user(core, update)
    result = await numbered_page(core.db, user, kind, page_no, PAGE_SIZE)
    title = "Your tracks" if kind == "history" else "Your favourites"
    if result is None or not result.items:
        if page_no > 1:
            await say(update, f"There is no page {page_no}; try /{kind}")
        elif kind == "history":
            await say(update, "No tracks yet: try /compose ambient")
        else:
            await say(update, "No favourites yet: press ⭐ under a track")
        return
    lines = [f"{title} (page {page_no}):", *map(track_line, result.items)]
    if result.next_before is not None:
        lines.append(f"More: /{kind} {page_no + 1}")
    lines.append("Send /continue <number> or /share <number> @channel.")
    await say(update, "\n".join(lines))


async def settings(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context)
    try:
        cmd = parse(update.effective_message.text or "")
    except UsageError as exc:
        await say(update, f"🤔 {exc}")
        return
    values = cmd.values if isinstance(cmd, SettingsCommand) else {}
    uid, name = who(update)

    async def apply(s):
        user = await get_or_create_user(s, PLATFORM, uid, name)
        if values:
            seconds = values.get("seconds")
            await set_defaults(s, user, **({**values, "seconds": round(seconds)} if seconds else values))
        return user

    user = await core.db.run(apply)
    genre = display_name(user.default_genre) if user.default_genre else "none (say it each time)"
    temp = f"{user.default_temperature:g}" if user.default_temperature is not None else "the genre's preset"
    head = "✅ Saved. Your defaults:" if values else "Your defaults:"
    await say(
        update,
        f"{head}\ngenre: {genre}\ntemperature: {temp}\nlength: {user.default_seconds or round(DEFAULT_SECONDS)} s\n"
        f"instrument: {user.default_instrument or 'piano'}\nChange with /settings genre=jazz temp=0.9 len=60",
    )


async def unfinished_job_ids(core: Core, uid: str) -> list[int]:
    async def find(s):
        user = await get_or_create_user(s, PLATFORM, uid)
        q = select(Job.id).where(Job.user_id == user.id, Job.state.in_((JobState.queued, JobState.running)))
        return list((await s.execute(q.order_by(Job.id.desc()))).scalars())

    return await core.db.run(find)


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context)
    uid, _ = who(update)
    for job_id in await unfinished_job_ids(core, uid):
        if await core.backend.cancel(job_id, PLATFORM, uid):
            await say(update, "✖️ Cancelled your track.")
            return
    await say(update, "Nothing to cancel: you have no track being composed.")


async def forget_me(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context)
    uid, _ = who(update)
    for job_id in await unfinished_job_ids(core, uid):
        await core.backend.cancel(job_id, PLATFORM, uid)
    gone = await forget_user(core.db, core.store, PLATFORM, uid)
    await say(update, f"🗑 Done: I deleted your settings, favourites and {gone.tracks} tracks.")


async def share(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context)
    uid, _ = who(update)
    try:
        cmd = parse(update.effective_message.text or "")
        if not isinstance(cmd, ShareCommand):
            raise UsageError("/share needs a track and a channel, like /share 42 @mychannel")
        user = await known_user(core, update)
        track = await core.db.run(lambda s: get_track(s, cmd.track_id, user, here(update)))
    except (UsageError, NotFound, Forbidden) as exc:
        await say(update, f"🤔 {exc}")
        return
    target: int | str = int(cmd.channel) if cmd.channel.lstrip("-").isdigit() else cmd.channel
    try:
        member = await with_retries(lambda: context.bot.get_chat_member(target, int(uid)))
    except TelegramError:
        await say(update, f"🙅 I can't see {cmd.channel}; add me to it first, then share again.")
        return
    if member.status not in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER):
        await say(update, f"🙅 You need to be a member of {cmd.channel} to share into it.")
        return
    try:
        sent = await send_track(context, target, track)
    except (TelegramError, NotFound) as exc:
        await say(update, f"🙅 I couldn't post into {cmd.channel}: {exc}")
        return
    await core.db.run(
        lambda s: record_share(s, user, track.id, (PLATFORM, str(sent.chat.id)), sent.message_id, here(update))
    )
    await say(update, f"📤 Shared #{track.id} into {cmd.channel}.")


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """🔁 🔥 ❄️ ⭐ ➕ 📤 under a track."""
    core = core_of(context)
    query = update.callback_query
    press = parse_button(query.data or "")
    if press is None:
        await query.answer("This button is out of date; send /compose again.", show_alert=True)
        return
    key = f"{PLATFORM}:{update.update_id}"
    if await job_exists(core, key):
        await query.answer()
        return
    uid, name = who(update)
    user = await known_user(core, update)
    try:
        track = await core.db.run(lambda s: get_track(s, press.track_id, user, here(update)))
    except (NotFound, Forbidden) as exc:
        await query.answer(f"🤔 {exc}", show_alert=True)
        return
    if press.action == "share":
        await query.answer(f"To share it, send /share {track.id} @yourchannel", show_alert=True)
        return
    if press.action in ("fav", "unfav"):
        await toggle_favourite(update, context, user, track, press.action == "fav")
        return
    if press.action == "continue":
        request = continue_request(PLATFORM, track, user, uid, name, key)
    else:
        request = child_request(PLATFORM, track, press.action, uid, name, key)
    refusal = await start_job(context, update, update.effective_chat.id, request)
    if refusal:
        await query.answer(f"🙅 {refusal}", show_alert=True)
    else:
        await query.answer({"continue": "➕ Continuing…", "reroll": "🔁 Rerolling…"}.get(press.action, "🎼 Composing…"))


async def toggle_favourite(
    update: Update, context: ContextTypes.DEFAULT_TYPE, user: User, track: Track, favourite: bool
) -> None:
    core = core_of(context)
    query = update.callback_query

    now = await set_favourite(core.db, user, track.id, favourite, here(update))
    await query.answer("⭐ Added to your favourites" if now else "Removed from your favourites")
    if update.effective_chat.type == ChatType.PRIVATE:  # in a channel the buttons are everyone's
        with contextlib.suppress(BadRequest):
            await query.edit_message_reply_markup(keyboard(track_buttons(track.id, now)))


async def unknown(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Anything else typed to the bot: the grammar says what to type instead."""
    try:
        parse(update.effective_message.text or "")
        message = "try /compose ambient, /genres or /help"
    except UsageError as exc:
        message = str(exc)
    await say(update, f"🤔 {message}")


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """One place for every unexpected error: log it (never the token) and tell the user, if any."""
    token = context.bot.token
    detail = str(context.error).replace(token, "<token>")
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed: %s: %s", update_id, context.error.__class__.__name__, detail)
    if isinstance(update, Update) and update.effective_message is not None:
        with contextlib.suppress(TelegramError):
            await update.effective_message.reply_text("⚠️ Something went wrong on my side; please try again.")


async def register_commands(application: Application) -> None:
    await application.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS.items()])


def build_application(
    token: str,
    backend: JobBackend,
    db: Database,
    store: ArtifactStore,
    base_url: str | None = None,
    base_file_url: str | None = None,
) -> Application:
    """The bot: every handler registered, commands announced on start-up."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry URLs with the token
    builder = Application.builder().token(token).post_init(register_commands)
    if base_url:
        builder = builder.base_url(base_url)
    if base_file_url:
        builder = builder.base_file_url(base_file_url)
    application = builder.build()
    application.bot_data["core"] = Core(backend, db, store)
    for name, handler in (
        ("start", start),
        ("help", help_command),
        ("genres", genres),
        ("compose", compose),
        ("continue", continue_command),
        ("history", history_command),
        (("favorites", "favourites", "favs"), favorites_command),
        ("settings", settings),
        ("cancel", cancel),
        (("forgetme", "forget_me"), forget_me),
        ("share", share),
    ):
        application.add_handler(CommandHandler(name, handler, filters=NEW_MESSAGES))
    application.add_handler(CallbackQueryHandler(button))
    application.add_handler(MessageHandler(NEW_MESSAGES & filters.TEXT & filters.ChatType.PRIVATE, unknown))
    application.add_error_handler(on_error)
    return application


__all__ = ["Core", "build_application", "child_request", "compose_request", "continue_request"]
