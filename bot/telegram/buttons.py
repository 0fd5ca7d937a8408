"""Telegram's buttons: 🔁 🔥 ❄️ ⭐ ➕ 📤 🎹 🎸 under a track, Keep 1 … N under candidates, and
/forgetme's question."""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Awaitable, Callable

from telegram import Chat, Message, Update
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, ContextTypes

from bot.core import ComposeTrack, Derive, Rerender, SetFavourite, TrackAsk
from bot.grammar import Compose, UsageError, genre_of
from bot.i18n import ENGLISH, N_, Translations
from bot.replies import (
    COMPOSING,
    FORGET_CONFIRM,
    FORGET_DELETE,
    FORGET_KEEP,
    FORGET_KEPT,
    OUT_OF_DATE,
    RERENDER_INSTRUMENTS,
    Button,
    Reply,
    Started,
    TrackCard,
    genre_label,
    parse_arrangement,
    parse_button,
    parse_keep,
    track_buttons,
)
from bot.telegram.commands import may_post
from bot.telegram.delivery import post_progress, send_score, send_track, track_keyboard
from bot.telegram.talk import core_of, keyboard, origin, text_of, tr, who, with_retries

STARTING = {"continue": N_("➕ Continuing…"), "reroll": N_("🔁 Rerolling…")}  # else COMPOSING
RECORDING = N_("🎹 Recording it anew…")
INSTRUMENT_DATA = re.compile(r"^inst:(\d{1,12})(?::([a-z_]{1,20}))?$")  # 🎹, a pick, or ◀ Back
MORE_DATA = re.compile(r"^more:(\d{1,12})$")
GENRE_DATA = re.compile(r"^compose:(\w{1,40})$")  # a genre under a bare /compose
FORGET_DATA = re.compile(r"^forgetme:(confirm|keep):(\d{1,20})$")  # the answer, and whom it asked


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """🔁 🔥 ❄️ ⭐ ➕ 📤 under a track."""
    core, t = core_of(context.application), tr(update)
    query = update.callback_query
    press = parse_button(query.data or "")
    if press is None or update.effective_chat is None:  # ours? (and not under a message sent inline)
        await query.answer(t.gettext(OUT_OF_DATE), show_alert=True)
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
        text = t.gettext("To share it, send /share {track_id} @yourchannel").format(track_id=track.track_id)
        await query.answer(text, show_alert=True)
        return
    if press.action in ("fav", "unfav"):
        private = update.effective_chat.type == ChatType.PRIVATE  # elsewhere the button is everyone's
        if not private and not first_delivery(context.application, update.update_id):
            await query.answer()  # a press delivered again (a webhook retry) must not turn it back
            return
        await toggle_favourite(update, context, track.track_id, press.action == "fav" if private else None)
        return
    if press.action == "continue":
        start = lambda: core.continue_track(TrackAsk(asked, track.track_id))
    else:
        start = lambda: core.derive(Derive(asked, press.action, track.track_id))
    await start_under(update, context, track.track_id, start, STARTING.get(press.action, COMPOSING))


async def start_under(
    update: Update,
    context: ContextTypes.DEFAULT_TYPE,
    track_id: int,
    start: Callable[[], Awaitable[Reply | Started]],
    starting: str,
) -> None:
    """A new track from a press under one (🔁 🔥 ❄️ ➕ 🎹), its progress in reply to it; where the
    chat is shared, only for those who may post there. `starting`: the press's answer (its msgid)."""
    query, chat = update.callback_query, update.effective_chat
    if not await may_compose_here(update, context, track_id):
        return
    result = await start()
    if isinstance(result, Started):
        under = query.message.message_id if query.message is not None else None
        await post_progress(context.application, chat.id, result.job_id, under, who(update).locale)
        await query.answer(tr(update).gettext(starting))
    elif result.silent:
        await query.answer()
    else:
        await query.answer(text_of(result), show_alert=True)


async def may_compose_here(update: Update, context: ContextTypes.DEFAULT_TYPE, track_id: int) -> bool:
    """Whether the presser may have the bot compose in this chat; if not, the press is answered why.
    A channel's subscribers and a group's muted members see the buttons too, but a new track would
    be posted here as if by them."""
    chat, t = update.effective_chat, tr(update)
    if chat.type == ChatType.PRIVATE or await may_post_in(context, chat, int(who(update).user_id)):
        return True
    if chat.type == ChatType.CHANNEL:
        text = t.gettext(
            "🔒 Only the channel's posters can compose here. Open a chat with me and send /continue {track_id}"
        )
    else:
        text = t.gettext(
            "🔒 Only members who may post here can compose here. Open a chat with me and send /continue {track_id}"
        )
    await update.callback_query.answer(text.format(track_id=track_id), show_alert=True)
    return False


def instrument_picker(track_id: int, favourite: bool, t: Translations = ENGLISH) -> list[list[Button]]:
    """🎹's choices, two a row, then ◀ Back to the track's buttons (its ⭐ shown as it was);
    instruments keep the English names people type."""
    picks = [Button(name.capitalize(), f"inst:{track_id}:{name.replace(' ', '_')}") for name in RERENDER_INSTRUMENTS]
    back = Button(t.gettext("◀ Back"), f"inst:{track_id}:{'back_fav' if favourite else 'back'}")
    return [*(picks[i : i + 2] for i in range(0, len(picks), 2)), [back]]


def shows_favourite(update: Update, track_id: int) -> bool:
    """Whether the keyboard pressed showed the track favourited (★: only ever in a private chat)."""
    message = update.callback_query.message
    markup = message.reply_markup if isinstance(message, Message) else None
    rows = markup.inline_keyboard if markup is not None else ()
    return any(b.callback_data == f"unfav:{track_id}" for row in rows for b in row)


async def instrument(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """🎹 under a track: its keyboard becomes a short instrument picker, and ◀ Back turns it back; a
    pick renders the same notes on that instrument, a new track in reply, as 🔁 composes one."""
    query = update.callback_query
    pressed = INSTRUMENT_DATA.match(query.data or "")
    if pressed is None:
        await query.answer(tr(update).gettext(OUT_OF_DATE), show_alert=True)
        return
    track_id, choice = int(pressed[1]), pressed[2]
    if update.effective_chat is None:  # under a message sent inline: there is no chat to post into
        await query.answer(tr(update).gettext("Open the bot to hear it on another instrument."), show_alert=True)
        return
    if choice is None or choice in ("back", "back_fav"):
        if not await may_compose_here(update, context, track_id):  # the keyboard is everyone's here
            return
        t = tr(update)
        # the track first: a keyboard is redrawn only under a track the presser may read here
        track = await core_of(context.application).track(TrackAsk(origin(update), track_id))
        if isinstance(track, Reply):
            await query.answer(text_of(track), show_alert=True)
            return
        if choice is None:
            markup = keyboard(instrument_picker(track_id, shows_favourite(update, track_id), t))
        else:  # the track's own keyboard again, its 🎸 toggle read from the track
            markup = track_keyboard(track_id, track_buttons(track_id, choice == "back_fav", t), t, track.arrangement)
        await query.answer()
        with contextlib.suppress(BadRequest):  # "not modified" (pressed twice), or the message is gone
            await query.edit_message_reply_markup(markup)
        return
    await rerender_under(update, context, Rerender(origin(update), track_id, choice.replace("_", " ")))


async def arrangement(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """🎸 under a track: the same notes in the other arrangement (the genre's band around the piano,
    or the piano alone), a new track in reply, as 🎹's pick makes one."""
    query = update.callback_query
    press = parse_arrangement(query.data or "")
    if press is None or update.effective_chat is None:  # ours? (and not under a message sent inline)
        await query.answer(tr(update).gettext(OUT_OF_DATE), show_alert=True)
        return
    await rerender_under(update, context, Rerender(origin(update), press.track_id, arrangement=press.arrangement))


async def rerender_under(update: Update, context: ContextTypes.DEFAULT_TYPE, ask: Rerender) -> None:
    """🎹's pick or 🎸: the pressed track's notes rendered anew, a new track in reply to it."""
    core = core_of(context.application)
    await start_under(update, context, ask.track_id, lambda: core.rerender(ask), RECORDING)


async def more(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """⋯ More under a track: its MIDI and piano roll, in reply to it. Where the chat is shared,
    only those who may post there get the bot to post them (as for 🔁)."""
    core, t = core_of(context.application), tr(update)
    query = update.callback_query
    chat = update.effective_chat
    if chat is None:  # under a message sent inline: there is no chat to post into
        await query.answer(t.gettext("Open the bot to get the MIDI and piano roll."), show_alert=True)
        return
    pressed = MORE_DATA.match(query.data or "")
    if pressed is None:
        await query.answer(t.gettext(OUT_OF_DATE), show_alert=True)
        return
    asked = origin(update)
    track = await core.track(TrackAsk(asked, int(pressed[1])))
    if await answered(update, context, track):
        return
    if chat.type != ChatType.PRIVATE and not await may_post_in(context, chat, int(asked.who.user_id)):
        await query.answer(t.gettext("🔒 Only members who may post here can have me post the files."), show_alert=True)
        return
    if not (track.midi_key or track.png_key):
        text = t.gettext("The MIDI and piano roll of #{track_id} have expired.").format(track_id=track.track_id)
        await query.answer(text, show_alert=True)
        return
    await query.answer(t.gettext("📎 MIDI and piano roll"))
    under = query.message.message_id if query.message is not None else None
    await send_score(context.application, chat.id, track, reply_to=under)


async def keep(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Keep N under a group of candidates, taken only from the person who asked for them: the kept
    one comes as the usual track message (in reply to the request), then the album and the picker
    go; one too old for Telegram to delete (48 hours) says what was kept, its buttons gone. Every
    candidate stays in the asker's history."""
    query, t = update.callback_query, tr(update)
    press, picker, chat = parse_keep(query.data or ""), query.message, update.effective_chat
    if press is None or not isinstance(picker, Message) or chat is None:  # or too old to be shown to us
        await query.answer(t.gettext(OUT_OF_DATE), show_alert=True)
        return
    track = await core_of(context.application).pick(TrackAsk(origin(update), press.track_id))
    if await answered(update, context, track):
        return
    kept = t.gettext("✅ Kept #{track_id}").format(track_id=track.track_id)
    await query.answer(kept)
    request = picker.reply_to_message.message_id if picker.reply_to_message is not None else None
    await send_track(context.application, chat.id, track, reply_to=request, t=t)
    rows = picker.reply_markup.inline_keyboard if picker.reply_markup is not None else ()
    pressed = [parse_keep(b.callback_data or "") for row in rows for b in row]
    shown = [p.message_id for p in pressed if p is not None and p.message_id is not None]
    try:
        await with_retries(lambda: context.bot.delete_messages(chat.id, [*shown, picker.message_id]))
    except BadRequest:
        with contextlib.suppress(BadRequest):
            await query.edit_message_text(kept)


async def pick_genre(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A genre button under a bare /compose: composes that genre, in reply to the question,
    which then says what was picked (its buttons gone, so one press makes one track)."""
    query, t = update.callback_query, tr(update)
    chat = update.effective_chat
    pressed = GENRE_DATA.match(query.data or "")
    try:
        if pressed is None:
            raise UsageError(OUT_OF_DATE)
        genre = genre_of(pressed[1])
    except UsageError:
        await query.answer(t.gettext(OUT_OF_DATE), show_alert=True)
        return
    if chat is None:
        await query.answer()
        return
    asked = origin(update)
    if chat.type != ChatType.PRIVATE and not await may_post_in(context, chat, int(asked.who.user_id)):
        await query.answer(t.gettext("🔒 Only members who may post here can compose here."), show_alert=True)
        return
    result = await core_of(context.application).compose(ComposeTrack(asked, Compose(genre=genre)))
    if isinstance(result, Started):
        under = query.message.message_id if query.message is not None else None
        await post_progress(context.application, chat.id, result.job_id, under, asked.who.locale)
        await query.answer(t.gettext(COMPOSING))
        with contextlib.suppress(BadRequest):
            await query.edit_message_text(f"🎼 {genre_label(genre, t)}")
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
            arranged = reply.track.arrangement if reply.track is not None else None
            await query.edit_message_reply_markup(track_keyboard(track_id, reply.buttons, tr(update), arranged))


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
    uid, t = who(update).user_id, tr(update)
    buttons = [
        [
            Button(t.gettext(FORGET_DELETE), f"forgetme:confirm:{uid}"),
            Button(t.gettext(FORGET_KEEP), f"forgetme:keep:{uid}"),
        ]
    ]
    markup = keyboard(buttons)
    await with_retries(lambda: update.effective_message.reply_text(t.gettext(FORGET_CONFIRM), reply_markup=markup))


async def forget_answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The answer to /forgetme's question, taken only from the person it asked. Deleting cancels
    their unfinished jobs, then removes everything of theirs."""
    query, t = update.callback_query, tr(update)
    pressed = FORGET_DATA.match(query.data or "")
    if pressed is None:
        await query.answer(t.gettext(OUT_OF_DATE), show_alert=True)
        return
    choice, asker = pressed.groups()
    if who(update).user_id != asker:
        text = t.gettext("This question was for someone else; send /forgetme to be asked yourself.")
        await query.answer(text, show_alert=True)
        return
    await query.answer()
    if choice == "confirm":
        answer = (await core_of(context.application).forget(who(update))).text
    else:
        answer = t.gettext(FORGET_KEPT)
    with contextlib.suppress(BadRequest):  # the question was deleted meanwhile: nothing to edit
        await query.edit_message_text(answer)
