"""Telegram: getting a job's result to its chat — the progress message, the audio, the score.

A job is followed by a background task of ours (`bot.core.Followers`, not `Application.create_task`,
which stopping the bot would wait on for as long as a track takes). Each job stores where its
result goes (the chat and the progress message), so when the bot stops mid-job its followers are
simply cancelled, and on the next start `resume_deliveries` re-attaches to every unfinished job of
ours and delivers it exactly as for a fresh one, in the language of the user who asked (stored with
the job's request).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Sequence

from telegram import InlineKeyboardMarkup, InputFile, InputMediaDocument, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application

from bot.core import apology, progress_of, watch
from bot.i18n import ENGLISH, N_, Translations, translator
from bot.replies import Button, TrackCard, arrangement_button, progress_line
from bot.telegram.talk import core_of, keyboard, with_retries

log = logging.getLogger(__name__)

PERFORMER = "Melomania"
EDIT_INTERVAL_S = 1.5  # Telegram tolerates about one edit a second per chat; stay under it
MORE = N_("⋯ More")  # under a track: its MIDI and piano roll, sent when pressed
INSTRUMENT = N_("🎹 Instrument")  # under a track: a picker of instruments to hear its notes on


async def show_action(app: Application, chat_id: int | str, action: str) -> None:
    """The chat's "sending audio…" line while an upload goes (it clears itself when the message
    arrives); cosmetic, so never worth failing or retrying for."""
    with contextlib.suppress(TelegramError):
        await app.bot.send_chat_action(chat_id, action)


def track_keyboard(
    track_id: int, rows: list[list[Button]], t: Translations = ENGLISH, arrangement: str | None = None
) -> InlineKeyboardMarkup:
    """A track's buttons (🔁 🔥 ❄️ / ⭐ ➕ 📤) and a last row with 🎹 Instrument, the 🎸 toggle to the
    other arrangement (when the track's `arrangement` is known) and ⋯ More."""
    last = [Button(t.gettext(INSTRUMENT), f"inst:{track_id}"), Button(t.gettext(MORE), f"more:{track_id}")]
    if arrangement is not None:
        last.insert(1, arrangement_button(track_id, arrangement, t))
    return keyboard([*rows, last])


def replying_to(message_id: int | None) -> ReplyParameters | None:
    """A reply to `message_id`, still sent when that message was deleted meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


async def send_score(
    app: Application, chat_id: int | str, track: TrackCard, reply_to: int | None = None
) -> list[Message]:
    """⋯ More: the piece's MIDI and its piano roll, as one album of two documents in reply to the
    track (one document when only one is kept); none when retention has removed both."""
    core = core_of(app)
    files = []
    if track.midi_key:
        files.append((await core.artifact(track.midi_key), f"{track.stem}.mid"))
    if track.png_key:
        files.append((await core.artifact(track.png_key), f"{track.stem}.png"))
    if not files:
        return []
    await show_action(app, chat_id, ChatAction.UPLOAD_DOCUMENT)
    if len(files) == 1:
        single = InputFile(files[0][0], filename=files[0][1])
        return [
            await with_retries(lambda: app.bot.send_document(chat_id, single, reply_parameters=replying_to(reply_to)))
        ]
    media = [InputMediaDocument(data, filename=name) for data, name in files]
    return list(
        await with_retries(lambda: app.bot.send_media_group(chat_id, media, reply_parameters=replying_to(reply_to)))
    )


async def audio_of(app: Application, chat_id: int | str, track: TrackCard) -> str | InputFile:
    """What to send as the track's audio: Telegram's file_id when it was uploaded before, else the
    MP3 (with the chat's "sending audio…" line while it uploads; `Unavailable` when it expired)."""
    if track.file_id is not None:
        return track.file_id
    data = await core_of(app).audio(track)
    await show_action(app, chat_id, ChatAction.UPLOAD_VOICE)
    return InputFile(data, filename=f"{track.title.replace(' #', '-')}.mp3")


async def send_track(
    app: Application,
    chat_id: int | str,
    track: TrackCard,
    favourite: bool = False,
    reply_to: int | None = None,
    t: Translations = ENGLISH,
) -> Message:
    """The track as one audio message with its caption and buttons (⋯ More among them, labelled in
    the language `t`), in reply to `reply_to` when given; reuses Telegram's file_id when it was
    uploaded before, and remembers it after the first upload (`Unavailable` when its audio expired)."""
    audio = await audio_of(app, chat_id, track)
    sent = await with_retries(
        lambda: app.bot.send_audio(
            chat_id,
            audio=audio,
            title=track.title,
            performer=PERFORMER,
            duration=round(track.duration_s),
            caption=track.caption,
            reply_markup=track_keyboard(track.track_id, track.buttons(favourite, t), t, track.arrangement),
            reply_parameters=replying_to(reply_to),
        )
    )
    if track.file_id is None and sent.audio is not None:
        await core_of(app).remember_file_id(track.track_id, sent.audio.file_id)
    return sent


async def new_progress(
    app: Application, chat_id: int, job_ids: Sequence[int], request_id: int | None = None, locale: str = "en"
) -> tuple[int, str]:
    """A new progress message for accepted jobs (in reply to the request `request_id`: the
    command, or the track whose button was pressed), in the asker's language `locale`, stored as
    where their results go: its id and text. A restart before the message id is stored finds none
    and posts a new one."""
    text = progress_line("queued", t=translator(locale))
    progress = await with_retries(lambda: app.bot.send_message(chat_id, text, reply_parameters=replying_to(request_id)))
    reply_to = {"chat_id": chat_id, "message_id": progress.message_id}
    if request_id is not None:
        reply_to["request_id"] = request_id
    for job_id in job_ids:
        await core_of(app).set_reply_to(job_id, reply_to)
    return progress.message_id, text


async def post_progress(
    app: Application, chat_id: int, job_id: int, request_id: int | None = None, locale: str = "en"
) -> None:
    """A new progress message for an accepted job (`new_progress`), then followed."""
    message_id, text = await new_progress(app, chat_id, (job_id,), request_id, locale)
    follow(app, chat_id, message_id, job_id, shown=text, request_id=request_id, locale=locale)


def follow(
    app: Application,
    chat_id: int,
    message_id: int,
    job_id: int,
    shown: str | None = None,
    request_id: int | None = None,
    locale: str = "en",
) -> None:
    """Follow the job in a task of ours (one per job), cancelled by `stop_following`."""
    work = follow_job(app, chat_id, message_id, job_id, shown, request_id, locale)
    core_of(app).followers.start(job_id, reported(app, chat_id, message_id, work, translator(locale)))


async def reported(app: Application, chat_id: int, message_id: int, work: Awaitable[None], t: Translations) -> None:
    """Run a follower; an unexpected error goes to the bot's error handler (which logs it without
    the token) and the progress message says something went wrong, rather than spinning forever."""
    try:
        await work
    except Exception as exc:
        await app.process_error(None, exc)
        with contextlib.suppress(TelegramError):
            await app.bot.edit_message_text(t.gettext(apology(exc)), chat_id=chat_id, message_id=message_id)


async def follow_job(
    app: Application,
    chat_id: int,
    message_id: int,
    job_id: int,
    shown: str | None,
    request_id: int | None = None,
    locale: str = "en",
) -> None:
    """Edit the progress message as the job advances (throttled), then replace it with the track:
    one audio message in reply to the request, and the progress message deleted. A failure or a
    cancellation is shown in the progress message instead."""
    core, t = core_of(app), translator(locale)
    edit = functools.partial(edit_progress, app, chat_id, message_id)
    final = await watch(core.events(job_id), edit, EDIT_INTERVAL_S, shown, t)
    if final is None:
        return
    if final.kind == "done" and final.track_id is not None:
        if chat_id < 0:  # a group or a channel (the Bot API's ids for them are negative)
            await core.share_here(final.track_id, str(chat_id))  # as on Discord: anyone there may use it
        track = await core.finished(final.track_id, locale)
        await send_track(app, chat_id, track, reply_to=request_id, t=t)
        await core.delivered(job_id)  # the track is the result: a restart must not send it again
        await remove_progress(app, chat_id, message_id, progress_of(final, t))
    else:
        await edit(progress_of(final, t))
        await core.delivered(job_id)


async def edit_progress(app: Application, chat_id: int, message_id: int, text: str) -> None:
    with contextlib.suppress(BadRequest):  # "message is not modified", or deleted by the user
        await with_retries(lambda: app.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id))


async def remove_progress(app: Application, chat_id: int, message_id: int, ending: str) -> None:
    """The progress message goes once the track is posted; one Telegram no longer lets us delete
    (over 48 hours old, say) says how it ended instead."""
    try:
        await with_retries(lambda: app.bot.delete_message(chat_id, message_id))
    except BadRequest:
        with contextlib.suppress(TelegramError):
            await with_retries(lambda: app.bot.edit_message_text(ending, chat_id=chat_id, message_id=message_id))


async def resume_deliveries(app: Application) -> int:
    """On start-up: follow every job of ours whose ending its user has not seen (still going, or
    ended while we were away) and that knows its chat, as if it had just been submitted.
    Returns how many were picked up."""
    resumed = 0
    for pending in await core_of(app).undelivered():
        chat_id, message_id = pending.reply_to.get("chat_id"), pending.reply_to.get("message_id")
        if not isinstance(chat_id, int):
            continue  # not submitted from a chat (or before jobs said where they go)
        try:
            request_id = pending.reply_to.get("request_id")
            request_id = request_id if isinstance(request_id, int) else None
            if isinstance(message_id, int):
                follow(app, chat_id, message_id, pending.job_id, request_id=request_id, locale=pending.locale)
            else:  # the bot stopped between accepting the job and posting its progress message
                await post_progress(app, chat_id, pending.job_id, request_id, pending.locale)
        except TelegramError as exc:  # e.g. the user blocked the bot meanwhile; the others still go
            log.warning("cannot resume job %s: %s", pending.job_id, exc.__class__.__name__)
            continue
        resumed += 1
    if resumed:
        log.info("resumed delivering %d jobs", resumed)
    return resumed


async def stop_following(app: Application) -> None:
    """On stop: cancel the followers; their jobs stay unfinished and are resumed on the next start."""
    await core_of(app).followers.stop()
