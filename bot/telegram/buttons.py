"""Telegram's buttons: 🔁 🔥 ❄️ ⭐ ➕ 📤 under a track, Keep 1 … N under candidates, and
/forgetme's question."""

from __future__ import annotations

import collections
import contextlib

from telegram import Chat, Message, Update
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, ContextTypes

from bot.core import ComposeTrack, Derive, SetFavourite, TrackAsk
from bot.grammar import Compose, UsageError, genre_of
from bot.replies import FORGET_CONFIRM, Button, Reply, Started, TrackCard, parse_button, parse_keep
from bot.telegram.commands import may_post
from bot.telegram.delivery import post_progress, send_score, send_track, track_keyboard
from bot.telegram.talk import core_of, keyboard, origin, text_of, who, with_retries
from generator.vocab import display_name

STARTING = {"continue": "➕ Continuing…", "reroll": "🔁 Rerolling…"}  # else "🎼 Composing…"


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """🔁 🔥 ❄️ ⭐ ➕ 📤 under a track."""
    core = core_of(context.application)
    query = update.callback_query
    press = parse_button(query.data or "")
    if press is None or update.effective_chat is None:  # ours? (and not under a message sent inline)
        await query.answer("This button is out of date; send /compose again.", show_alert=True)
        return
    asked = origin(update)
    if await core.seen(asked.key):
        await query.answer()
        return
    track = await core.track(TrackAsk(asked, press.track_id))
    if isinstance(track, Reply):
        await query.answer(text_of(track), show_alert=True)
        return
    if press.action == "share":
        await query.answer(f"To share it, send /share {track.track_id} @yourchannel", show_alert=True)
        return
    chat = update.effective_chat
    if press.action in ("fav", "unfav"):
        private = chat.type == ChatType.PRIVATE  # elsewhere the button is everyone's
        if not private and not first_delivery(context.application, update.update_id):
            await query.answer()  # a press delivered again (a webhook retry) must not turn it back
            return
        await toggle_favourite(update, context, track.track_id, press.action == "fav" if private else None)
        return
    if chat.type != ChatType.PRIVATE and not await may_post_in(context, chat, int(asked.who.user_id)):
        # A channel's subscribers and a group's muted members see the buttons too, but the new
        # track would be posted here as if by them.
        who_may = "the channel's posters" if chat.type == ChatType.CHANNEL else "members who may post here"
        await query.answer(
            f"🔒 Only {who_may} can compose here. Open a chat with me and send /continue {track.track_id}",
            show_alert=True,
        )
        return
    if press.action == "continue":
        result = await core.continue_track(TrackAsk(asked, track.track_id))
    else:
        result = await core.derive(Derive(asked, press.action, track.track_id))
    if isinstance(result, Started):
        under = query.message.message_id if query.message is not None else None
        await post_progress(context.application, chat.id, result.job_id, under)
        await query.answer(STARTING.get(press.action, "🎼 Composing…"))
    elif result.silent:
        await query.answer()
    else:
        await query.answer(text_of(result), show_alert=True)


async def more(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """⋯ More under a track: its MIDI and piano roll, in reply to it. Where the chat is shared,
    only those who may post there get the bot to post them (as for 🔁)."""
    core = core_of(context.application)
    query = update.callback_query
    chat = update.effective_chat
    if chat is None:  # under a message sent inline: there is no chat to post into
        await query.answer("Open the bot to get the MIDI and piano roll.", show_alert=True)
        return
    asked = origin(update)
    track = await core.track(TrackAsk(asked, int((query.data or "").split(":")[1])))
    if await answered(update, context, track):
        return
    if chat.type != ChatType.PRIVATE and not await may_post_in(context, chat, int(asked.who.user_id)):
        await query.answer("🔒 Only members who may post here can have me post the files.", show_alert=True)
        return
    if not (track.midi_key or track.png_key):
        await query.answer(f"The MIDI and piano roll of #{track.track_id} have expired.", show_alert=True)
        return
    await query.answer("📎 MIDI and piano roll")
    under = query.message.message_id if query.message is not None else None
    await send_score(context.application, chat.id, track, reply_to=under)


async def keep(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Keep N under a group of candidates, taken only from the person who asked for them: the kept
    one comes as the usual track message (in reply to the request), then the album and the picker
    go; one too old for Telegram to delete (48 hours) says what was kept, its buttons gone. Every
    candidate stays in the asker's history."""
    query = update.callback_query
    press, picker, chat = parse_keep(query.data or ""), query.message, update.effective_chat
    if press is None or not isinstance(picker, Message) or chat is None:  # or too old to be shown to us
        await query.answer("This button is out of date; send /compose again.", show_alert=True)
        return
    track = await core_of(context.application).pick(TrackAsk(origin(update), press.track_id))
    if await answered(update, context, track):
        return
    await query.answer(f"✅ Kept #{track.track_id}")
    request = picker.reply_to_message.message_id if picker.reply_to_message is not None else None
    await send_track(context.application, chat.id, track, reply_to=request)
    rows = picker.reply_markup.inline_keyboard if picker.reply_markup is not None else ()
    pressed = [parse_keep(b.callback_data or "") for row in rows for b in row]
    shown = [p.message_id for p in pressed if p is not None and p.message_id is not None]
    try:
        await with_retries(lambda: context.bot.delete_messages(chat.id, [*shown, picker.message_id]))
    except BadRequest:
        with contextlib.suppress(BadRequest):
            await query.edit_message_text(f"✅ Kept #{track.track_id}")


async def pick_genre(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A genre button under a bare /compose: composes that genre, in reply to the question,
    which then says what was picked (its buttons gone, so one press makes one track)."""
    query = update.callback_query
    chat = update.effective_chat
    try:
        genre = genre_of((query.data or "").split(":", 1)[1])
    except UsageError:
        await query.answer("This button is out of date; send /compose again.", show_alert=True)
        return
    if chat is None:
        await query.answer()
        return
    asked = origin(update)
    if chat.type != ChatType.PRIVATE and not await may_post_in(context, chat, int(asked.who.user_id)):
        await query.answer("🔒 Only members who may post here can compose here.", show_alert=True)
        return
    result = await core_of(context.application).compose(ComposeTrack(asked, Compose(genre=genre)))
    if isinstance(result, Started):
        under = query.message.message_id if query.message is not None else None
        await post_progress(context.application, chat.id, result.job_id, under)
        await query.answer("🎼 Composing…")
        with contextlib.suppress(BadRequest):
            await query.edit_message_text(f"🎼 {display_name(genre).capitalize()}")
    elif result.silent:
        await query.answer()
    else:
        await query.answer(text_of(result), show_alert=True)


async def answered(update: Update, context: ContextTypes.DEFAULT_TYPE, found: TrackCard | Reply) -> bool:
    """Whether a press that sends something is answered already: the track it needs was refused
    (said in an alert), or the press came again (a webhook retry), and must send nothing twice."""
    if isinstance(found, Reply):
        await update.callback_query.answer(text_of(found), show_alert=True)
        return True
    if not first_delivery(context.application, update.update_id):
        await update.callback_query.answer()
        return True
    return False


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
    update: Update, context: ContextTypes.DEFAULT_TYPE, track_id: int, favourite: bool | None
) -> None:
    """`favourite` None: turn the presser's favourite over (a shared chat's button shows no state)."""
    query = update.callback_query
    reply = await core_of(context.application).favourite(SetFavourite(origin(update), track_id, favourite))
    if reply.kind:
        await query.answer(text_of(reply), show_alert=True)
        return
    await query.answer(reply.text)
    if update.effective_chat.type == ChatType.PRIVATE:  # in a channel the buttons are everyone's
        with contextlib.suppress(BadRequest):
            await query.edit_message_reply_markup(track_keyboard(track_id, reply.buttons))


async def may_post_in(context: ContextTypes.DEFAULT_TYPE, chat: Chat, user_id: int) -> bool:
    try:
        member = await with_retries(lambda: context.bot.get_chat_member(chat.id, user_id))
    except TelegramError:
        return False
    return may_post(chat.type, member)


async def forget_me(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Asks first, as Discord does: nothing is deleted until the asker presses the button. A
    /forgetme is one tap on a link in any message, and in a group everyone sees the question, so
    the buttons carry whose question it is."""
    uid = who(update).user_id
    buttons = [[Button("🗑 Delete everything", f"forgetme:confirm:{uid}"), Button("Keep it", f"forgetme:keep:{uid}")]]
    await with_retries(lambda: update.effective_message.reply_text(FORGET_CONFIRM, reply_markup=keyboard(buttons)))


async def forget_answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The answer to /forgetme's question, taken only from the person it asked. Deleting cancels
    their unfinished jobs, then removes everything of theirs."""
    query = update.callback_query
    _, choice, asker = (query.data or "").split(":")  # the handler's pattern guarantees the shape
    if who(update).user_id != asker:
        await query.answer("This question was for someone else; send /forgetme to be asked yourself.", show_alert=True)
        return
    await query.answer()
    if choice == "confirm":
        answer = (await core_of(context.application).forget(who(update))).text
    else:
        answer = "👍 Kept everything."
    with contextlib.suppress(BadRequest):  # the question was deleted meanwhile: nothing to edit
        await query.edit_message_text(answer)
