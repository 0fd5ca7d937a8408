"""Telegram: several candidates at once (/compose jazz count=3), for the user to keep one.

One progress message follows the whole group; then the candidates come as one album of audio
(captions 1 … N), and under it a small picker with Keep 1 … Keep N (an album can carry no
buttons). The Keep buttons carry each candidate's message in the album, so the pick
(`bot.telegram.buttons.keep`) can remove them all and needs nothing kept in memory.

Only a group started by this run is followed as a group: after a restart each unfinished
candidate is resumed as a job of its own (`resume_deliveries`), and arrives as a track of its
own, with the usual buttons.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from telegram import InputMediaAudio, Message
from telegram.ext import Application

from bot.core import watch_group
from bot.i18n import Translations, translator
from bot.replies import PICK_ONE, TrackCard, candidate_line, keep_buttons, progress_line
from bot.telegram.delivery import (
    EDIT_INTERVAL_S,
    PERFORMER,
    audio_of,
    edit_progress,
    new_progress,
    remove_progress,
    replying_to,
    reported,
    send_track,
)
from bot.telegram.talk import core_of, keyboard, with_retries


async def post_candidates(
    app: Application, chat_id: int, job_ids: Sequence[int], request_id: int | None, locale: str = "en"
) -> None:
    """One progress message for the group (`new_progress`), then the group followed as one, all
    in the asker's language `locale`."""
    message_id, text = await new_progress(app, chat_id, job_ids, request_id, locale)
    work = follow_candidates(app, chat_id, message_id, job_ids, text, request_id, locale)
    core_of(app).followers.start(job_ids[0], reported(app, chat_id, message_id, work, translator(locale)))


async def follow_candidates(
    app: Application,
    chat_id: int,
    message_id: int,
    job_ids: Sequence[int],
    shown: str,
    request_id: int | None,
    locale: str = "en",
) -> None:
    """Edit the one progress message as the group advances; once every candidate has ended, show
    those that came (several: an album and its picker; one: the usual track message), and take
    the progress message away, or leave in it how the others ended."""
    core, t = core_of(app), translator(locale)
    edit = functools.partial(edit_progress, app, chat_id, message_id)
    streams = {job_id: core.events(job_id) for job_id in job_ids}
    endings = await watch_group(streams, edit, EDIT_INTERVAL_S, shown, t)
    tracks, missing = await core.candidates(endings, locale)
    if chat_id < 0:  # a group or a channel: as for one track, anyone there may use them
        for track in tracks:
            await core.share_here(track.track_id, str(chat_id))
    if len(tracks) > 1:
        await send_candidates(app, chat_id, tracks, request_id, t)
    elif tracks:
        await send_track(app, chat_id, tracks[0], reply_to=request_id, t=t)
    for job_id, ending in endings.items():
        if ending is not None:  # the others stay undelivered, for the next start
            await core.delivered(job_id)
    if missing is not None:
        await edit(missing)
    elif tracks:
        await remove_progress(app, chat_id, message_id, progress_line("done", t=t))


async def send_candidates(
    app: Application, chat_id: int, tracks: list[TrackCard], request_id: int | None, t: Translations
) -> list[Message]:
    """The candidates as one album of audio, captioned 1 … N, in reply to the request, and the
    picker under it; each upload's file_id is remembered, so the kept one is sent without one."""
    media = [
        InputMediaAudio(
            await audio_of(app, chat_id, track),
            caption=candidate_line(n, track),
            title=track.title,
            performer=PERFORMER,
            duration=round(track.duration_s),
        )
        for n, track in enumerate(tracks, 1)
    ]
    album = await with_retries(
        lambda: app.bot.send_media_group(chat_id, media, reply_parameters=replying_to(request_id))
    )
    for track, sent in zip(tracks, album):
        if track.file_id is None and sent.audio is not None:
            await core_of(app).remember_file_id(track.track_id, sent.audio.file_id)
    buttons = keep_buttons([track.track_id for track in tracks], [m.message_id for m in album], t)
    picker = await with_retries(
        lambda: app.bot.send_message(
            chat_id, t.gettext(PICK_ONE), reply_markup=keyboard(buttons), reply_parameters=replying_to(request_id)
        )
    )
    return [*album, picker]
