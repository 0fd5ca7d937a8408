"""The Telegram front end (python-telegram-bot v22): one handler per intent, each short.

Handlers only translate: a Telegram update becomes text for `bot.grammar.parse` or a button press
for `bot.replies.parse_button`; a request goes to the job backend; the core's captions, progress
lines and buttons become Telegram messages and inline keyboards. Composing happens in the job
backend; following a job and delivering its track (`bot.telegram_delivery`) runs in the
background, so a handler returns at once, and resumes after a restart.

    app = build_application(token, runner, db, store)
    app.run_polling()   # or, with a public https URL: app.run_webhook(**webhook.run_options())
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from telegram import BotCommand, Chat, Document, InlineQueryResultCachedAudio, InlineQueryResultsButton, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, TelegramError
from telegram.error import Forbidden as CannotWrite
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    InlineQueryHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.core import (
    DEFAULT_SECONDS,
    cancel_newest_job,
    child_request,
    compose_request,
    continue_request,
    forget_everything,
    midi_continue_request,
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
    genre_of,
    parse,
)
from bot.limits import Limits
from bot.replies import FORGET_CONFIRM, Button, parse_button, track_buttons
from bot.telegram_delivery import (
    PLATFORM,
    Core,
    core_of,
    keyboard,
    resume_deliveries,
    send_track,
    start_job,
    stop_following,
    with_retries,
)
from generator.vocab import display_name
from jobs.api import MAX_PRIMER_BYTES, ComposeRequest, JobBackend, Refused, primer_from_midi
from storage import ArtifactStore, Database, Forbidden, Job, NotFound, Track, User
from storage.favorites import list_favorites
from storage.shares import record_share
from storage.tracks import get_track
from storage.users import get_or_create_user, get_user, set_defaults

log = logging.getLogger(__name__)

PAGE_SIZE = 10
INLINE_RESULTS = 50  # Telegram's most per answer
INLINE_PAGES = 20  # favourites read per inline query at most: INLINE_PAGES × INLINE_RESULTS
INLINE_CACHE_S = 10  # short: a new favourite should show up at once
MIDI_NAMES = (".mid", ".midi", ".kar")
MIDI_TYPES = ("audio/midi", "audio/x-midi", "audio/mid", "audio/sp-midi")
NEW_MESSAGES = filters.UpdateType.MESSAGE  # not edits (editing a /compose must not compose again), not channel posts
WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports Telegram delivers webhooks to
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram accepts as a webhook secret

COMMANDS = {
    "compose": "compose a track: /compose jazz 0.9 60s",
    "genres": "the genres you can ask for",
    "history": "your tracks, newest first: /history 2",
    "favorites": "your favourite tracks",
    "continue": "continue a track: /continue 42, or reply /continue to a MIDI file",
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
    "Reply /continue (or /continue jazz) to a MIDI file to carry it on.\n"
    "In any chat, type @{bot} (or @{bot} jazz) to send one of your favourites.\n"
    "/settings genre=jazz temp=0.9 len=60 instrument=strings — your defaults\n"
    "/cancel — stop the current track · /forgetme — delete your data"
)


# --- small helpers -----------------------------------------------------------------------------


# Who Telegram names as the sender when it hides the person: an anonymous group admin
# (@GroupAnonymousBot), someone posting as a channel (@Channel_Bot) and a channel's posts forwarded
# into its discussion group (Telegram's own 777000). Many people share each id.
STAND_IN_IDS = frozenset({1087968824, 136817688, 777000})
ANONYMOUS = (
    "🙈 I can't tell who you are when you post as the group or as a channel, and your tracks, favourites "
    "and settings must be yours alone. Turn off “Remain anonymous” (or post as yourself) to use me."
)


async def refuse_hidden_senders(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every other handler. A message whose sender Telegram hides comes from an id
    that many people share: answered with why, and handled no further (else they would all share
    one account, each able to continue, cancel or delete the others' tracks)."""
    message = update.message
    if message is None:  # button presses and inline queries always name the real person
        return
    sender = message.from_user
    if message.sender_chat is None and (sender is None or sender.id not in STAND_IN_IDS):
        return
    words = (message.text or message.caption or "").split(maxsplit=1)
    command, _, addressee = (words[0] if words else "").partition("@")
    if command.startswith("/") and addressee.lower() in ("", context.bot.username.lower()):  # ours to answer
        await say(update, ANONYMOUS)
    raise ApplicationHandlerStop


def who(update: Update) -> tuple[str, str]:
    """The sender's id and name (handlers only see new messages, button presses and inline
    queries, which all have one)."""
    user = update.effective_user
    return str(user.id), user.full_name


def here(update: Update) -> tuple[str, str]:
    return (PLATFORM, str(update.effective_chat.id))


def help_text(context: ContextTypes.DEFAULT_TYPE) -> str:
    return HELP.format(genres=GENRE_NAMES, bot=context.bot.username)


async def say(update: Update, text: str) -> None:
    await with_retries(lambda: update.effective_message.reply_text(text))


async def known_user(core: Core, update: Update) -> User:
    uid, name = who(update)
    return await core.db.run(lambda s: get_or_create_user(s, PLATFORM, uid, name))


async def job_exists(core: Core, key: str) -> bool:
    return await core.db.run(lambda s: s.scalar(select(Job.id).where(Job.idempotency_key == key))) is not None


def over_limit(core: Core, update: Update) -> str | None:
    """The polite refusal when this user, or this chat, asks for tracks too fast; else None (and
    the action is counted)."""
    uid, _ = who(update)
    chat = update.effective_chat
    return core.limits.check(f"{PLATFORM}:{uid}", f"{PLATFORM}-chat:{chat.id}" if chat else None)


async def submit_or_refuse(update: Update, context: ContextTypes.DEFAULT_TYPE, request: ComposeRequest) -> None:
    """A command's request: rate-limited, then started; a refusal is the reply."""
    core = core_of(context.application)
    refusal = over_limit(core, update) or await start_job(context.application, update.effective_chat.id, request)
    if refusal:
        await say(update, f"🙅 {refusal}")


# --- handlers, one per intent ------------------------------------------------------------------


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await known_user(core_of(context.application), update)
    if context.args == ["favorites"]:  # from the button under an empty inline answer
        await show_page(update, context, "favorites", 1)
        return
    await say(update, "Hello! " + help_text(context))


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await say(update, help_text(context))


async def genres(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await say(update, f"Genres: {GENRE_NAMES}.\nFor example: /compose ambient or /compose jazz 0.9 60s")


async def compose(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context.application)
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
    await submit_or_refuse(update, context, request)


async def continue_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/continue 42 carries on a track; /continue [genre] in reply to a MIDI file carries on that."""
    core = core_of(context.application)
    key = f"{PLATFORM}:{update.update_id}"
    if await job_exists(core, key):
        return
    message = update.effective_message
    text = message.text or ""
    replied = message.reply_to_message
    if replied is not None and replied.document is not None and not re.fullmatch(r"\S+\s+#?\d+", text.strip()):
        await continue_midi(update, context, replied.document, text.split()[1:], key)
        return
    uid, name = who(update)
    try:
        cmd = parse(text)
        if not isinstance(cmd, TrackCommand) or cmd.track_id is None:
            raise UsageError("/continue takes a track number, like /continue 42, or reply /continue to a MIDI file")
        user = await known_user(core, update)
        track = await core.db.run(lambda s: get_track(s, cmd.track_id, user, here(update)))
    except (UsageError, NotFound, Forbidden) as exc:
        await say(update, f"🤔 {exc}")
        return
    await submit_or_refuse(update, context, continue_request(PLATFORM, track, user, uid, name, key))


def check_midi_document(document: Document) -> None:
    """Refuse what is plainly not a MIDI file, or too big, before downloading anything."""
    name, mime = (document.file_name or "").lower(), (document.mime_type or "").lower()
    if (name or mime) and not (name.endswith(MIDI_NAMES) or mime in MIDI_TYPES):
        raise UsageError("that file isn't MIDI; reply /continue to a .mid file (or send /continue 42 for a track)")
    if document.file_size and document.file_size > MAX_PRIMER_BYTES:
        size, most = document.file_size / 1e6, MAX_PRIMER_BYTES // 1_000_000
        raise UsageError(f"that MIDI file is {size:.1f} MB; send one up to {most} MB")


async def continue_midi(
    update: Update, context: ContextTypes.DEFAULT_TYPE, document: Document, args: list[str], key: str
) -> None:
    """Carry on a user's MIDI file: its last bars become the primer of a new piece in the genre
    they name, or their default one (asked for when they have none)."""
    core = core_of(context.application)
    uid, name = who(update)
    try:
        if len(args) > 1:
            raise UsageError("reply /continue or /continue jazz to a MIDI file")
        genre = genre_of(args[0]) if args else None
        check_midi_document(document)
        user = await known_user(core, update)
        ref = f"telegram-file:{document.file_unique_id}"
        request = midi_continue_request(PLATFORM, (), ref, genre, user, uid, name, key)  # the genre is asked first
    except UsageError as exc:
        await say(update, f"🤔 {exc}")
        return
    refusal = over_limit(core, update)  # before downloading: the limit also bounds downloads
    if refusal is None:
        try:
            file = await with_retries(lambda: context.bot.get_file(document.file_id))
            data = bytes(await file.download_as_bytearray())
            primer = await asyncio.to_thread(primer_from_midi, data)
        except Refused as exc:
            await say(update, f"🤔 {exc}")
            return
        refusal = await start_job(context.application, update.effective_chat.id, replace(request, primer=primer))
    if refusal:
        await say(update, f"🙅 {refusal}")


async def history_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await list_tracks(update, context, "history")


async def favorites_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await list_tracks(update, context, "favorites")


async def list_tracks(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str) -> None:
    try:
        cmd = parse(update.effective_message.text or "")
    except UsageError as exc:
        await say(update, f"🤔 {exc}")
        return
    await show_page(update, context, kind, cmd.page if isinstance(cmd, Page) else 1)


async def show_page(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str, page_no: int) -> None:
    core = core_of(context.application)
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
    if update.effective_chat.type == ChatType.PRIVATE:
        await say(update, "\n".join(lines))
        return
    # in a group the list is the asker's alone: it goes to their private chat with the bot
    try:
        await with_retries(lambda: context.bot.send_message(update.effective_user.id, "\n".join(lines)))
    except CannotWrite:  # they never opened a chat with the bot, so it may not write to them
        await say(update, f"🔒 Your {kind} is private: open a chat with me (@{context.bot.username}) and send /{kind}")
        return
    await say(update, f"📬 Sent your {kind} to our private chat.")


async def settings(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context.application)
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


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context.application)
    uid, _ = who(update)
    await say(update, await cancel_newest_job(core.backend, core.db, PLATFORM, uid))


async def forget_me(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Asks first, as Discord does: nothing is deleted until the asker presses the button. A
    /forgetme is one tap on a link in any message, and in a group everyone sees the question, so
    the buttons carry whose question it is."""
    uid, _ = who(update)
    buttons = [[Button("🗑 Delete everything", f"forgetme:confirm:{uid}"), Button("Keep it", f"forgetme:keep:{uid}")]]
    await with_retries(lambda: update.effective_message.reply_text(FORGET_CONFIRM, reply_markup=keyboard(buttons)))


async def forget_answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The answer to /forgetme's question, taken only from the person it asked. Deleting cancels
    their unfinished jobs, then removes everything of theirs (storage.privacy.forget_user)."""
    query = update.callback_query
    _, choice, asker = (query.data or "").split(":")  # the handler's pattern guarantees the shape
    uid, _ = who(update)
    if uid != asker:
        await query.answer("This question was for someone else; send /forgetme to be asked yourself.", show_alert=True)
        return
    await query.answer()
    if choice == "confirm":
        core = core_of(context.application)
        answer = await forget_everything(core.backend, core.db, core.store, PLATFORM, uid)
    else:
        answer = "👍 Kept everything."
    with contextlib.suppress(BadRequest):  # the question was deleted meanwhile: nothing to edit
        await query.edit_message_text(answer)


def may_post(chat_type: str, member) -> bool:
    """Whether a user may put a message in a chat: in a channel only its owner or an admin with the
    right to post (a subscriber is a 'member' too, but cannot post); elsewhere any member who is
    not muted."""
    if member.status == ChatMemberStatus.OWNER:
        return True
    if chat_type == ChatType.CHANNEL:
        return member.status == ChatMemberStatus.ADMINISTRATOR and bool(getattr(member, "can_post_messages", False))
    if member.status == ChatMemberStatus.RESTRICTED:
        return bool(getattr(member, "is_member", False) and getattr(member, "can_send_messages", False))
    return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER)


async def may_post_in(context: ContextTypes.DEFAULT_TYPE, chat: Chat, user_id: int) -> bool:
    try:
        member = await with_retries(lambda: context.bot.get_chat_member(chat.id, user_id))
    except TelegramError:
        return False
    return may_post(chat.type, member)


async def share(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core = core_of(context.application)
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
        chat = await with_retries(lambda: context.bot.get_chat(target))
        member = await with_retries(lambda: context.bot.get_chat_member(target, int(uid)))
    except TelegramError:
        await say(update, f"🙅 I can't see {cmd.channel}; add me to it first, then share again.")
        return
    if not may_post(chat.type, member):
        where = "an admin of the channel who may post" if chat.type == ChatType.CHANNEL else "a member who may write"
        await say(update, f"🙅 To share into {cmd.channel} you need to be {where} there.")
        return
    try:
        sent = await send_track(context.application, target, track)
    except (TelegramError, NotFound) as exc:
        await say(update, f"🙅 I couldn't post into {cmd.channel}: {exc}")
        return
    await core.db.run(
        lambda s: record_share(s, user, track.id, (PLATFORM, str(sent.chat.id)), sent.message_id, here(update))
    )
    await say(update, f"📤 Shared #{track.id} into {cmd.channel}.")


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """🔁 🔥 ❄️ ⭐ ➕ 📤 under a track."""
    core = core_of(context.application)
    query = update.callback_query
    press = parse_button(query.data or "")
    if press is None or update.effective_chat is None:  # ours? (and not under a message sent inline)
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
        private = update.effective_chat.type == ChatType.PRIVATE  # elsewhere the button is everyone's
        if not private and not first_delivery(context.application, update.update_id):
            await query.answer()  # a press delivered again (a webhook retry) must not turn it back
            return
        await toggle_favourite(update, context, user, track, press.action == "fav" if private else None)
        return
    chat = update.effective_chat
    if chat.type != ChatType.PRIVATE and not await may_post_in(context, chat, int(uid)):
        # A channel's subscribers and a group's muted members see the buttons too, but the new
        # track would be posted here as if by them.
        who_may = "the channel's posters" if chat.type == ChatType.CHANNEL else "members who may post here"
        await query.answer(
            f"🔒 Only {who_may} can compose here. Open a chat with me and send /continue {track.id}",
            show_alert=True,
        )
        return
    if press.action == "continue":
        request = continue_request(PLATFORM, track, user, uid, name, key)
    else:
        request = child_request(PLATFORM, track, press.action, uid, name, key)
    refusal = over_limit(core, update) or await start_job(context.application, chat.id, request)
    if refusal:
        await query.answer(f"🙅 {refusal}", show_alert=True)
    else:
        await query.answer({"continue": "➕ Continuing…", "reroll": "🔁 Rerolling…"}.get(press.action, "🎼 Composing…"))


def first_delivery(application: Application, update_id: int, remembered: int = 1000) -> bool:
    """Whether this update is seen for the first time, among the last `remembered` asked about
    (a redelivery comes soon after the first, to the process that got it)."""
    seen: collections.OrderedDict[int, None] = application.bot_data.setdefault("seen", collections.OrderedDict())
    if update_id in seen:
        return False
    seen[update_id] = None
    while len(seen) > remembered:
        seen.popitem(last=False)
    return True


async def toggle_favourite(
    update: Update, context: ContextTypes.DEFAULT_TYPE, user: User, track: Track, favourite: bool | None
) -> None:
    """`favourite` None: turn the presser's favourite over (a shared chat's button shows no state)."""
    core = core_of(context.application)
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


# --- inline mode: @bot in any chat sends one of your favourites --------------------------------


def inline_filter(text: str) -> tuple[str, Any] | None:
    """What an inline query asks for: ("all", None), ("track", 42) or ("genre", "jazz"); None when
    it is neither a number nor a genre."""
    words = text.strip()
    if not words:
        return ("all", None)
    if m := re.fullmatch(r"#?(\d{1,12})", words):
        return ("track", int(m.group(1)))
    try:
        return ("genre", genre_of(words))
    except UsageError:
        return None


async def matching_favourites(
    core: Core, uid: str, wanted: tuple[str, Any], before: int | None
) -> tuple[list[tuple[Track, str]], int, int | None]:
    """The asker's own favourites that match and can be sent by file_id, up to a full answer:
    (track and file_id pairs, how many matched but have no Telegram upload, the next offset)."""
    kind, value = wanted

    def matches(t: Track) -> bool:
        return kind == "all" or (kind == "track" and t.id == value) or (kind == "genre" and t.genre == value)

    async def find(s):
        user = await get_user(s, PLATFORM, uid)  # lookup only: an inline query creates no account
        found: list[tuple[Track, str]] = []
        skipped, cursor = 0, before
        if user is None:
            return found, skipped, None
        for _ in range(INLINE_PAGES):
            # ask for exactly what is missing, so the cursor never passes a favourite unseen
            page = await list_favorites(s, user, INLINE_RESULTS - len(found), cursor)
            for track in filter(matches, page.items):
                file_id = (track.file_ids or {}).get(PLATFORM)
                if file_id:
                    found.append((track, file_id))
                else:
                    skipped += 1
            cursor = page.next_before
            if cursor is None or len(found) >= INLINE_RESULTS:
                break
        return found, skipped, cursor

    return await core.db.run(find)


async def inline_query(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer with the asker's favourites as cached audio (Telegram's own copies, nothing is
    uploaded): personal, cached briefly, filtered by a genre or a track number."""
    query = update.inline_query
    uid, _ = who(update)
    wanted = inline_filter(query.query)
    # The client sends the offset back; a custom one could hold "²" (a digit to isdigit, not to
    # int) or a number too long for the database.
    offset = int(query.offset) if re.fullmatch(r"[0-9]{1,18}", query.offset) else None
    found: list[tuple[Track, str]] = []
    skipped, next_offset = 0, None
    if wanted is not None:
        found, skipped, next_offset = await matching_favourites(core_of(context.application), uid, wanted, offset)
    results = [
        InlineQueryResultCachedAudio(id=str(track.id), audio_file_id=file_id, caption=track_caption(track))
        for track, file_id in found
    ]
    note = None  # shown above the results: why some or all are missing
    if wanted is None:
        note = "Type a genre (jazz, ambient…) or a track number"
    elif skipped:
        note = f"{skipped} favourite{'s' if skipped > 1 else ''} can't be sent from here; open the bot"
    elif not results and offset is None:
        note = "No favourites yet: open the bot and press ⭐" if wanted[0] == "all" else "No favourite matches that"
    await query.answer(
        results,
        cache_time=INLINE_CACHE_S,
        is_personal=True,
        next_offset=str(next_offset) if next_offset is not None else None,
        button=InlineQueryResultsButton(note, start_parameter="favorites") if note else None,
    )


# --- wiring ------------------------------------------------------------------------------------


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


async def on_start(application: Application) -> None:
    """After connecting: announce the commands, then deliver the jobs a restart left unfinished."""
    await register_commands(application)
    await resume_deliveries(application)


def build_application(
    token: str,
    backend: JobBackend,
    db: Database,
    store: ArtifactStore,
    base_url: str | None = None,
    base_file_url: str | None = None,
    limits: Limits | None = None,
) -> Application:
    """The bot: every handler registered; on start-up it announces its commands and resumes
    delivering unfinished jobs, and on stop it stops following them (the next start resumes)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry URLs with the token
    builder = Application.builder().token(token).post_init(on_start).post_stop(stop_following)
    if base_url:
        builder = builder.base_url(base_url)
    if base_file_url:
        builder = builder.base_file_url(base_file_url)
    application = builder.build()
    application.bot_data["core"] = Core(backend, db, store, limits or Limits())
    application.add_handler(TypeHandler(Update, refuse_hidden_senders), group=-1)
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
    application.add_handler(CallbackQueryHandler(forget_answer, pattern=r"^forgetme:(confirm|keep):\d+$"))
    application.add_handler(CallbackQueryHandler(button))
    application.add_handler(InlineQueryHandler(inline_query))
    application.add_handler(MessageHandler(NEW_MESSAGES & filters.TEXT & filters.ChatType.PRIVATE, unknown))
    application.add_error_handler(on_error)
    return application


# --- webhook or polling ------------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    """Where Telegram posts updates (`url`, public https) and where we listen for them (usually
    behind a proxy that terminates TLS). The secret never shows in a repr or a log line."""

    url: str
    listen: str
    port: int
    secret_token: str = field(repr=False)

    def run_options(self) -> dict[str, Any]:
        """Keyword arguments for `Application.run_webhook` (or `Updater.start_webhook`)."""
        return {
            "listen": self.listen,
            "port": self.port,
            "url_path": urlsplit(self.url).path.strip("/"),
            "webhook_url": self.url,
            "secret_token": self.secret_token,
        }


def webhook_from(
    url: str | None, listen: str = "127.0.0.1", port: int = 8443, secret: str | None = None
) -> Webhook | None:
    """None (long polling, the default) without a URL; else the webhook, or UsageError saying
    what to fix. Neither the URL nor the secret is repeated in an error: either may be private."""
    if not url or not url.strip():
        return None
    parts = urlsplit(url.strip())
    try:
        public_port = parts.port
    except ValueError:
        public_port = -1
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError("MELOMANIA_TELEGRAM_WEBHOOK_URL must be a public https:// URL (Telegram only calls https)")
    if public_port is not None and public_port not in WEBHOOK_PORTS:
        raise UsageError("MELOMANIA_TELEGRAM_WEBHOOK_URL must use port 443, 80, 88 or 8443 (the ones Telegram calls)")
    if secret is not None and not SECRET_TOKEN.fullmatch(secret):
        raise UsageError("MELOMANIA_TELEGRAM_WEBHOOK_SECRET may hold only A-Z, a-z, 0-9, _ and -, 1 to 256 of them")
    # Without a configured secret, a fresh one each start: Telegram gets it with setWebhook, and
    # requests that do not carry it are refused, so nobody else can post updates to us.
    return Webhook(parts.geturl(), listen, port, secret or secrets.token_urlsafe(32))


__all__ = [
    "Core",
    "Webhook",
    "build_application",
    "child_request",
    "compose_request",
    "continue_request",
    "webhook_from",
]
