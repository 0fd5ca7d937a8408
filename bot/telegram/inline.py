"""Inline mode: @bot in any chat sends one of the asker's favourites, as Telegram's own copy."""

from __future__ import annotations

import re
from typing import Any

from telegram import InlineQueryResultCachedAudio, InlineQueryResultsButton, Update
from telegram.ext import ContextTypes

from bot.grammar import UsageError, genre_of
from bot.replies import TrackCard
from bot.telegram.talk import core_of, tr, who

INLINE_RESULTS = 50  # Telegram's most per answer
INLINE_PAGES = 20  # favourites read per inline query at most: INLINE_PAGES × INLINE_RESULTS
INLINE_CACHE_S = 10  # short: a new favourite should show up at once


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


async def inline_query(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer with the asker's favourites as cached audio (Telegram's own copies, nothing is
    uploaded): personal, cached briefly, filtered by a genre or a track number; a track number
    finds the asker's own track even when it is no favourite (what 📤 Share's picker sends)."""
    query = update.inline_query
    wanted = inline_filter(query.query)
    # The client sends the offset back; a custom one could hold "²" (a digit to isdigit, not to
    # int) or a number too long for the database.
    offset = int(query.offset) if re.fullmatch(r"[0-9]{1,18}", query.offset) else None
    found: list[TrackCard] = []
    skipped, next_offset = 0, None
    if wanted is not None:
        kind, value = wanted

        def matches(t: TrackCard) -> bool:
            return kind == "all" or (kind == "track" and t.track_id == value) or (kind == "genre" and t.genre == value)

        core = core_of(context.application)
        own = await core.own_track_to_send(who(update), value) if kind == "track" and offset is None else None
        if own is not None:  # 📤 Share's chat picker asks for "#42": the asker's own track, favourite or not
            found = [own]
        else:
            found, skipped, next_offset = await core.favourites_to_send(
                who(update), matches, offset, INLINE_RESULTS, INLINE_PAGES
            )
    results = [
        InlineQueryResultCachedAudio(id=str(track.track_id), audio_file_id=track.file_id, caption=track.caption)
        for track in found
    ]
    note, t = None, tr(update)  # the note is shown above the results: why some or all are missing
    if wanted is None:
        note = t.gettext("Type a genre (jazz, ambient…) or a track number")
    elif skipped:
        note = t.ngettext(
            "{n} favourite can't be sent from here; open the bot",
            "{n} favourites can't be sent from here; open the bot",
            skipped,
        ).format(n=skipped)
    elif not results and offset is None:
        if wanted[0] == "all":
            note = t.gettext("No favourites yet: open the bot and press ⭐")
        else:
            note = t.gettext("No favourite matches that")
    await query.answer(
        results,
        cache_time=INLINE_CACHE_S,
        is_personal=True,
        next_offset=str(next_offset) if next_offset is not None else None,
        button=InlineQueryResultsButton(note, start_parameter="favorites") if note else None,
    )
