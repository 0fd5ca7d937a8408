"""Telegram's commands, one handler per intent, each short: the message becomes an intent for
the command service (`bot.core`), and its reply a message; an accepted job gets a progress
message and is followed (`bot.telegram.delivery`)."""

from __future__ import annotations

import re
from typing import TypeVar

import httpx
from telegram import Document, File, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import Forbidden as CannotWrite
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.core import (
    MAX_PRIMER_BYTES,
    ComposeTrack,
    ContinueMidi,
    SettingsAsk,
    TrackAsk,
    Unavailable,
    Where,
)
from bot.grammar import (
    GENRE_NAMES,
    SHARE_USAGE,
    Compose,
    Page,
    SettingsCommand,
    ShareCommand,
    TrackCommand,
    UsageError,
    genre_of,
    parse,
)
from bot.i18n import N_, Translations, reason
from bot.replies import Button, Listing, Reply, Started, genre_label
from bot.telegram.candidates import post_candidates
from bot.telegram.delivery import post_progress, send_track
from bot.telegram.menus import page_buttons, page_of, page_text, settings_menu, settings_message
from bot.telegram.talk import PLATFORM, answer, core_of, keyboard, origin, say, tr, who, with_retries
from generator.vocab import GENRES

T = TypeVar("T")
MIDI_NAMES = (".mid", ".midi", ".kar")
MIDI_TYPES = ("audio/midi", "audio/x-midi", "audio/mid", "audio/sp-midi")
DOWNLOAD_TIMEOUT_S = 30.0  # for each read of a user's file from Telegram's file server
HELP = N_(
    "🎹 I compose piano music.\n\n"
    "/compose ambient — a track (genres: {genres})\n"
    "/compose jazz temp=0.9 len=60 seed=7 — with options; also topk, topp, k, rp, rps, instrument\n"
    "/compose jazz 0.9 60s — the same, shorter\n"
    "/compose jazz count=3 — three at once, to keep the one you like\n"
    "/compose jazz band · /compose jazz solo — with the genre's band (bass, drums, pads) or the piano alone\n"
    "Under each track: 🔁 reroll, 🔥 hotter, ❄️ cooler, ⭐ favourite, ➕ continue, 📤 share,\n"
    "🎹 Instrument: the same notes on another instrument, 🎸 the same notes with or without the band,\n"
    "⋯ More: its MIDI and piano roll.\n\n"
    "/history [page] · /favorites · /continue 42 · /share 42 @channel\n"
    "Reply /continue (or /continue jazz) to a MIDI file to carry it on.\n"
    "In any chat, type @{bot} (or @{bot} jazz) to send one of your favourites.\n"
    '/settings — your defaults, as buttons (or /settings genre=jazz inst="electric piano")\n'
    "/cancel — stop the current track · /forgetme — delete your data"
)


def help_text(context: ContextTypes.DEFAULT_TYPE, t: Translations) -> str:
    return t.gettext(HELP).format(genres=GENRE_NAMES, bot=context.bot.username)


async def usage(update: Update, exc: UsageError) -> None:
    """What to type instead, in the sender's language."""
    await say(update, f"🤔 {exc.said(tr(update))}")


async def parsed(update: Update, kind: type[T], usage_text: str) -> T | None:
    """The message as a command of `kind`, or None once the user was told what to type instead
    (`usage_text`, a msgid, when it is another command)."""
    try:
        cmd = parse(update.effective_message.text or "")
        if not isinstance(cmd, kind):
            raise UsageError(usage_text)
    except UsageError as exc:
        await usage(update, exc)
        return None
    return cmd


async def started(update: Update, context: ContextTypes.DEFAULT_TYPE, result: Reply | Started) -> None:
    """An accepted job (or group of candidates) gets its progress message and is followed; a
    refusal is the answer."""
    if isinstance(result, Started):
        request_id, chat_id, locale = update.effective_message.message_id, update.effective_chat.id, who(update).locale
        if result.candidates:
            await post_candidates(context.application, chat_id, result.job_ids, request_id, locale)
        else:
            await post_progress(context.application, chat_id, result.job_id, request_id, locale)
    else:
        await answer(update, result)


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await core_of(context.application).user(who(update))
    if context.args == ["favorites"]:  # from the button under an empty inline answer
        await show_page(update, context, "favorites", 1)
        return
    t = tr(update)
    await say(update, t.gettext("Hello! ") + help_text(context, t))


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await say(update, help_text(context, tr(update)))


async def genres(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    text = tr(update).gettext("Genres: {genres}.\nFor example: /compose ambient or /compose jazz 0.9 60s")
    await say(update, text.format(genres=GENRE_NAMES))


PICK_GENRE = N_("🎼 Pick a genre (or type one, like /compose jazz 0.9 60s):")


def genre_buttons(t: Translations) -> list[list[Button]]:
    """One button a genre, two a row; pressing one composes it."""
    row = [Button(genre_label(g, t), f"compose:{g}") for g in GENRES]
    return [row[i : i + 2] for i in range(0, len(row), 2)]


async def compose(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if (cmd := await parsed(update, Compose, N_("try /compose ambient"))) is None:
        return
    core, t = core_of(context.application), tr(update)
    if cmd == Compose() and (await core.user(who(update))).default_genre is None:  # a bare /compose
        reply_markup = keyboard(genre_buttons(t))
        text = t.gettext(PICK_GENRE)
        await with_retries(lambda: update.effective_message.reply_text(text, reply_markup=reply_markup, do_quote=True))
        return
    await started(update, context, await core.compose(ComposeTrack(origin(update), cmd)))


async def continue_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/continue 42 carries on a track; /continue [genre] in reply to a MIDI file carries on that."""
    message = update.effective_message
    text = message.text or ""
    replied = message.reply_to_message
    if replied is not None and replied.document is not None and not re.fullmatch(r"\S+\s+#?\d+", text.strip()):
        await continue_midi(update, context, replied.document, text.split()[1:])
        return
    wanted = N_("/continue takes a track number, like /continue 42, or reply /continue to a MIDI file")
    if (cmd := await parsed(update, TrackCommand, wanted)) is None:
        return
    if cmd.track_id is None:
        await usage(update, UsageError(wanted))
        return
    core = core_of(context.application)
    await started(update, context, await core.continue_track(TrackAsk(origin(update), cmd.track_id)))


def check_midi_document(document: Document) -> None:
    """Refuse what is plainly not a MIDI file, or too big, before downloading anything."""
    name, mime = (document.file_name or "").lower(), (document.mime_type or "").lower()
    if (name or mime) and not (name.endswith(MIDI_NAMES) or mime in MIDI_TYPES):
        raise UsageError(N_("that file isn't MIDI; reply /continue to a .mid file (or send /continue 42 for a track)"))
    check_midi_size(document.file_size)


def check_midi_size(size: int | None) -> None:
    """Refuse a file Telegram says is over the limit (None: it did not say)."""
    if size is not None and size > MAX_PRIMER_BYTES:
        shown, most = f"{size / 1e6:.1f}", MAX_PRIMER_BYTES // 1_000_000
        raise UsageError(N_("that MIDI file is {size} MB; send one up to {most} MB"), size=shown, most=most)


async def download_midi(file: File) -> bytes:
    """A MIDI file's bytes, refused (UsageError) by the size getFile gives before any download;
    where it gives none either, the download stops as soon as it passes the limit."""
    check_midi_size(file.file_size)
    if file.file_size is not None or not (file.file_path or "").startswith(("http://", "https://")):
        data = bytes(await file.download_as_bytearray())  # known to fit, or a local Bot API server's file
    else:
        data = await download_at_most(file.file_path, MAX_PRIMER_BYTES)
    if len(data) > MAX_PRIMER_BYTES:  # how much more there was is not known: it was not downloaded
        most = MAX_PRIMER_BYTES // 1_000_000
        raise UsageError(N_("that MIDI file is over {most} MB; send one up to {most} MB"), most=most)
    return data


async def download_at_most(url: str, most: int) -> bytes:
    """The bytes at `url`, up to `most` + 1: one more is enough to know the file is too big."""
    data = bytearray()
    async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT_S) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > most:
                break
    return bytes(data[: most + 1])


async def continue_midi(
    update: Update, context: ContextTypes.DEFAULT_TYPE, document: Document, args: list[str]
) -> None:
    """Carry on a user's MIDI file: its last bars become the primer of a new piece in the genre
    they name, or their default one (asked for when they have none)."""
    core = core_of(context.application)
    try:
        if len(args) > 1:
            raise UsageError(N_("reply /continue or /continue jazz to a MIDI file"))
        genre = genre_of(args[0]) if args else None
        check_midi_document(document)
    except UsageError as exc:
        await usage(update, exc)
        return
    ask = ContinueMidi(origin(update), genre, f"telegram-file:{document.file_unique_id}")
    refusal = await core.prepare_midi(ask)  # the genre, then the limits: they also bound downloads
    if refusal is not None:
        await answer(update, refusal)
        return
    file = await with_retries(lambda: context.bot.get_file(document.file_id))
    try:
        data = await download_midi(file)
    except UsageError as exc:
        await usage(update, exc)
        return
    await started(update, context, await core.continue_midi(ask, data))


async def history_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await list_tracks(update, context, "history")


async def favorites_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await list_tracks(update, context, "favorites")


async def list_tracks(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str) -> None:
    try:
        cmd = parse(update.effective_message.text or "")
    except UsageError as exc:
        await usage(update, exc)
        return
    await show_page(update, context, kind, cmd.page if isinstance(cmd, Page) else 1)


async def show_page(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str, page_no: int) -> None:
    """A page of the asker's list, with ◀ ▶ to turn it (`bot.telegram.menus`)."""
    listing: Listing = await page_of(update, context, kind, page_no)
    t = tr(update)
    text, markup = page_text(listing, t), keyboard(page_buttons(listing))
    if not listing.lines or update.effective_chat.type == ChatType.PRIVATE:
        await with_retries(lambda: update.effective_message.reply_text(text, reply_markup=markup))
        return
    # in a group the list is the asker's alone: it goes to their private chat with the bot
    try:
        await with_retries(lambda: context.bot.send_message(update.effective_user.id, text, reply_markup=markup))
    except CannotWrite:  # they never opened a chat with the bot, so it may not write to them
        await say(update, t.gettext(PRIVATE_LISTS[kind]).format(bot=context.bot.username))
        return
    await say(update, t.gettext(SENT_LISTS[kind]))


PRIVATE_LISTS = {
    "history": N_("🔒 Your history is private: open a chat with me (@{bot}) and send /history"),
    "favorites": N_("🔒 Your favourites are private: open a chat with me (@{bot}) and send /favorites"),
}
SENT_LISTS = {
    "history": N_("📬 Sent your history to our private chat."),
    "favorites": N_("📬 Sent your favourites to our private chat."),
}


async def settings(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/settings shows the defaults with a button menu; /settings genre=jazz … sets them as typed."""
    try:
        cmd = parse(update.effective_message.text or "")
    except UsageError as exc:
        await usage(update, exc)
        return
    values = cmd.values if isinstance(cmd, SettingsCommand) else {}
    reply = await core_of(context.application).settings(SettingsAsk(origin(update), values))
    t = tr(update)
    text, markup = settings_message(reply, t), keyboard(settings_menu(None, t))
    await with_retries(lambda: update.effective_message.reply_text(text, reply_markup=markup))


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await answer(update, await core_of(context.application).cancel(who(update)))


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


async def share(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    core, t = core_of(context.application), tr(update)
    if (cmd := await parsed(update, ShareCommand, SHARE_USAGE)) is None:
        return
    ask = TrackAsk(origin(update), cmd.track_id)
    track = await core.track(ask)
    if isinstance(track, Reply):
        await answer(update, track)
        return
    target: int | str = int(cmd.channel) if cmd.channel.lstrip("-").isdigit() else cmd.channel
    try:
        chat = await with_retries(lambda: context.bot.get_chat(target))
        member = await with_retries(lambda: context.bot.get_chat_member(target, int(ask.origin.who.user_id)))
    except TelegramError:
        await say(
            update,
            t.gettext("🙅 I can't see {channel}; add me to it first, then share again.").format(channel=cmd.channel),
        )
        return
    if not may_post(chat.type, member):
        if chat.type == ChatType.CHANNEL:
            text = t.gettext("🙅 To share into {channel} you need to be an admin of the channel who may post there.")
        else:
            text = t.gettext("🙅 To share into {channel} you need to be a member who may write there.")
        await say(update, text.format(channel=cmd.channel))
        return
    try:
        sent = await send_track(context.application, target, track, t=t)
    except (TelegramError, Unavailable) as exc:
        text = t.gettext("🙅 I couldn't post into {channel}: {reason}")
        await say(update, text.format(channel=cmd.channel, reason=reason(exc, t)))
        return
    await core.shared(ask, Where(PLATFORM, str(sent.chat.id)), sent.message_id)
    await say(
        update, t.gettext("📤 Shared #{track_id} into {channel}.").format(track_id=track.track_id, channel=cmd.channel)
    )


async def unknown(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Anything else typed to the bot: the grammar says what to type instead."""
    try:
        parse(update.effective_message.text or "")
        message = tr(update).gettext("try /compose ambient, /genres or /help")
    except UsageError as exc:
        message = exc.said(tr(update))
    await say(update, f"🤔 {message}")
