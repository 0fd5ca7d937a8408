"""Discord: getting a job's ending to its user — progress edits of the original response, then
the track (MP3, MIDI, piano roll) in its place: one message per track, or one for a group of
candidates (their MP3s and Keep 1 … Keep N, the pick turning it into the kept track's).

Each job stores its channel. An interaction's token lives 15 minutes and not past a restart, so a
job resumed on start-up, or one whose token expired meanwhile, is posted into that channel
instead, mentioning the user; a job is receipted once its user has been shown how it ended.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import discord

from bot.core import Pending, Unavailable, progress_of, watch, watch_group
from bot.discord.talk import core_of, say, text_of, token_expired, who, withdraw
from bot.discord.views import candidates_view, track_embed, track_view
from bot.i18n import N_, Translations, translator
from bot.replies import PICK_ONE, Reply, Started, TrackCard, candidate_line

log = logging.getLogger(__name__)

EDIT_INTERVAL_S = 1.0  # editing the original response: well under Discord's per-webhook rate limit
DEFAULT_FILESIZE_LIMIT = 10 * 1024 * 1024  # the smallest per-guild attachment limit


@dataclass
class Delivery:
    """Where a job's ending goes. `interaction` is the one that asked, while its token lives; it is
    None for a job resumed after a restart and once the token has expired, and then the result is
    posted into the channel with a mention of the user. Everything is said in `locale`, the user's
    language."""

    job_id: int
    channel_id: int | None
    guild_id: int | None
    user_id: str
    interaction: discord.Interaction | None = None
    editing: bool = True  # whether the original response still takes progress edits
    locale: str = "en"

    @property
    def chat_id(self) -> str:
        """The channel as `storage` names it (a DM is a channel too)."""
        return str(self.channel_id or self.user_id)

    @property
    def t(self) -> Translations:
        return translator(self.locale)

    @classmethod
    def resumed(cls, pending: Pending) -> Delivery | None:
        """A job of a previous run, posted into its stored channel; None when it knows none."""
        channel_id = snowflake(pending.reply_to.get("channel_id"))
        if channel_id is None:
            return None
        guild_id = snowflake(pending.reply_to.get("guild_id"))
        return cls(pending.job_id, channel_id, guild_id, pending.user_id, locale=pending.locale)


def snowflake(value: Any) -> int | None:
    """A Discord id read back from a stored reply_to (an int, or digits); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def size_text(size: int) -> str:
    """A file size as Discord's own limits are written (10 MB, 8 KB)."""
    return f"{size / 2**20:.1f} MB".replace(".0 MB", " MB") if size >= 2**20 else f"{max(1, round(size / 1024))} KB"


async def track_files(client: discord.Client, track: TrackCard, limit: int) -> list[discord.File]:
    """The MP3, then the MIDI and the piano roll as far as they fit the channel's attachment limit.
    An MP3 over the limit by itself is refused (Unavailable, with words for the user): a score
    without its sound is not the track."""
    core = client.core  # type: ignore[attr-defined]
    mp3 = await core.audio(track)
    if len(mp3) > limit:
        raise Unavailable(
            N_("track #{track_id} is {size}, over this channel's {limit} attachment limit; compose a shorter one"),
            track_id=track.track_id,
            size=size_text(len(mp3)),
            limit=size_text(limit),
        )
    files, room = [discord.File(io.BytesIO(mp3), filename=f"{track.stem}.mp3")], limit - len(mp3)
    for key, ext in ((track.midi_key, "mid"), (track.png_key, "png")):
        if key is None:
            continue
        data = await core.artifact(key)
        if len(data) <= room:
            files.append(discord.File(io.BytesIO(data), filename=f"{track.stem}.{ext}"))
            room -= len(data)
    return files


def piano_roll(files: list[discord.File]) -> str | None:
    """The attached piano roll's file name, for the embed to show it as its image."""
    return next((f.filename for f in files if f.filename.endswith(".png")), None)


def refusal_reason(exc: discord.HTTPException, t: Translations) -> str:
    """Why Discord refused to post something, in words for the user."""
    if exc.status == 413 or exc.code == 40005:
        return t.gettext("it is larger than this channel accepts")
    if exc.status == 403:
        return t.gettext("I'm not allowed to post files here")
    return t.gettext("Discord answered {status} ({text})").format(
        status=exc.status, text=exc.text or t.gettext("no reason given")
    )


async def edit_progress(delivery: Delivery, text: str) -> None:
    """Edit the original response, while it can be edited. A refusal is not the job's failure: an
    expired token sends the ending to the channel; a deleted response just stops the edits."""
    if delivery.interaction is None or not delivery.editing:
        return
    try:
        await delivery.interaction.edit_original_response(content=text)
    except discord.HTTPException as exc:
        delivery.editing = False
        if token_expired(exc):
            delivery.interaction = None
        log.info("job %s: the response can't be edited any more (%s)", delivery.job_id, exc.status)


async def post(client: discord.Client, delivery: Delivery, text: str = "", **message: Any) -> discord.Message | None:
    """A new message for the user: a follow-up of their interaction while its token lives, else a
    post into the channel that mentions them (only them). None when there is no channel to post in."""
    if delivery.interaction is not None:
        try:
            return await delivery.interaction.followup.send(text, wait=True, **message)
        except discord.HTTPException as exc:
            if not token_expired(exc):
                raise
            delivery.interaction = None
            for file in message.get("files", ()):
                file.reset()  # the failed upload read them to the end
    if delivery.channel_id is None:
        return None
    channel = client.get_partial_messageable(delivery.channel_id, guild_id=delivery.guild_id)
    mention = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(int(delivery.user_id))])
    return await channel.send(f"<@{delivery.user_id}> {text}".rstrip(), allowed_mentions=mention, **message)


async def replace_progress(
    client: discord.Client, delivery: Delivery, files: list[discord.File], text: str | None = None, **message: Any
) -> discord.Message | None:
    """The track (or candidates) in place of the progress response while that can be edited, so
    that each is one message; else a new message (`post`)."""
    if delivery.interaction is not None and delivery.editing:
        try:
            return await delivery.interaction.edit_original_response(content=text, attachments=files, **message)
        except discord.HTTPException as exc:
            if not token_expired(exc):
                raise
            delivery.interaction = None
            for file in files:
                file.reset()  # the failed upload read them to the end
    return await post(client, delivery, text or "", files=files, **message)


async def tell(client: discord.Client, delivery: Delivery, text: str) -> bool:
    """Show the user how their job ended: in the original response while it can be edited, else in
    a new message. Whether it reached them."""
    if delivery.interaction is not None and delivery.editing:
        try:
            await delivery.interaction.edit_original_response(content=text)
            return True
        except discord.HTTPException as exc:
            delivery.interaction = None if token_expired(exc) else delivery.interaction
    try:
        return await post(client, delivery, text) is not None
    except discord.HTTPException as exc:
        log.warning("job %s: cannot tell its user how it ended (%s)", delivery.job_id, exc.status)
        return False


def upload_limit(client: discord.Client, delivery: Delivery) -> int:
    if delivery.interaction is not None and delivery.interaction.filesize_limit:
        return delivery.interaction.filesize_limit
    guild = client.get_guild(delivery.guild_id) if delivery.guild_id else None
    return guild.filesize_limit if guild is not None else DEFAULT_FILESIZE_LIMIT


async def post_track(client: discord.Client, delivery: Delivery, track_id: int) -> bool:
    """Post the track with its buttons, recorded as shared in its channel so that anyone there may
    reroll it; or tell the user why it can't be posted. Whether they were shown either."""
    core, t = client.core, delivery.t  # type: ignore[attr-defined]
    track = await core.finished(track_id, delivery.locale)
    try:
        files = await track_files(client, track, upload_limit(client, delivery))
    except Unavailable as exc:
        return await tell(client, delivery, f"⚠️ {exc.said(t)}")
    await core.share_here(track_id, delivery.chat_id)  # before it appears: a press at once already passes
    try:
        embed = track_embed(track, image=piano_roll(files))
        sent = await replace_progress(
            client, delivery, files, embed=embed, view=track_view(track_id, t=t, arrangement=track.arrangement)
        )
    except discord.HTTPException as exc:
        text = t.gettext("⚠️ I couldn't post track #{track_id}: {reason}")
        return await tell(client, delivery, text.format(track_id=track_id, reason=refusal_reason(exc, t)))
    if sent is None:
        return False
    await core.share_here(track_id, delivery.chat_id, sent.id)
    return True


async def candidate_files(client: discord.Client, tracks: list[TrackCard], limit: int) -> list[discord.File]:
    """Each candidate's MP3, named by its number (as its Keep button is); `Unavailable`, with words
    for the user, when together they are over the channel's attachment limit."""
    mp3s = [await client.core.audio(track) for track in tracks]  # type: ignore[attr-defined]
    if (size := sum(map(len, mp3s))) > limit:
        raise Unavailable(  # no count in it: the asker knows it, and the words need not agree with it
            N_(
                "the candidates are {size} together, over this channel's {limit} attachment limit; "
                "ask for fewer or shorter ones"
            ),
            size=size_text(size),
            limit=size_text(limit),
        )
    return [
        discord.File(io.BytesIO(mp3), filename=f"{n}-{t.stem}.mp3") for n, (t, mp3) in enumerate(zip(tracks, mp3s), 1)
    ]


async def post_candidates(
    client: discord.Client, delivery: Delivery, tracks: list[TrackCard], missing: str | None
) -> bool:
    """The candidates as one message: their MP3s, a line each, how the others ended, and Keep 1 …
    Keep N; recorded as shared in the channel (the kept one's buttons are everyone's there). Or why
    they can't be posted. Whether the user was shown either."""
    t = delivery.t
    try:
        files = await candidate_files(client, tracks, upload_limit(client, delivery))
    except Unavailable as exc:
        return await tell(client, delivery, f"⚠️ {exc.said(t)}")
    for track in tracks:
        await client.core.share_here(track.track_id, delivery.chat_id)  # type: ignore[attr-defined]
    shown = (candidate_line(n, track) for n, track in enumerate(tracks, 1))
    lines = [t.gettext(PICK_ONE), *shown, *([missing] if missing else [])]
    view = candidates_view([track.track_id for track in tracks], t)
    try:
        sent = await replace_progress(client, delivery, files, "\n".join(lines), view=view)
    except discord.HTTPException as exc:
        text = t.gettext("⚠️ I couldn't post the candidates: {reason}")
        return await tell(client, delivery, text.format(reason=refusal_reason(exc, t)))
    return sent is not None


async def follow_candidates(client: discord.Client, delivery: Delivery, streams: Mapping[int, AsyncIterator]) -> None:
    """`follow_job` for a group of candidates: one progress response for them all, the candidates
    in its place (one that came alone: as its usual track), and the receipts of those that ended.
    Only a group started by this run is followed as a group: after a restart each unfinished
    candidate is resumed as a job of its own, and posted as a track of its own."""
    core = client.core  # type: ignore[attr-defined]
    endings = await watch_group(streams, lambda text: edit_progress(delivery, text), EDIT_INTERVAL_S, t=delivery.t)
    tracks, missing = await core.candidates(endings, delivery.locale)
    if len(tracks) > 1:
        shown = await post_candidates(client, delivery, tracks, missing)
    elif tracks:
        shown = await post_track(client, delivery, tracks[0].track_id)
        if shown and missing:
            await tell(client, delivery, missing)  # above the track, while its message can be edited
    elif missing:
        shown = await tell(client, delivery, missing)
    else:
        return  # none ended: all stay undelivered, for the next start
    if shown:
        for job_id, ending in endings.items():
            if ending is not None:
                await core.delivered(job_id)


async def follow_job(client: discord.Client, delivery: Delivery, events: AsyncIterator) -> None:
    """Show the job's progress, then its ending (the track, or why there is none), then give the
    backend its receipt, so that the next start does not deliver it again."""
    final = await watch(events, lambda text: edit_progress(delivery, text), EDIT_INTERVAL_S, t=delivery.t)
    if final is None:
        return
    if final.kind == "done" and final.track_id is not None:  # the track takes the progress response's place
        shown = await post_track(client, delivery, final.track_id)
    elif final.kind == "cancelled" and delivery.interaction is None:
        shown = True  # only the user cancels, and /cancel told them
    else:
        shown = await tell(client, delivery, progress_of(final, delivery.t))
    if shown:
        await client.core.delivered(delivery.job_id)  # type: ignore[attr-defined]


async def start_job(interaction: discord.Interaction, result: Reply | Started) -> None:
    """What the service made of a composing action: a refusal is a private answer; an accepted
    job is deferred (unless it was already, as every caller does now) and followed in the background. Every action that
    composes comes through here."""
    deferred = interaction.response.is_done()  # the composing commands and buttons defer before the service
    if isinstance(result, Reply):
        if not result.silent:  # silent: the same interaction twice, and the first is composing it
            await (withdraw if deferred else say)(interaction, text_of(result))
        return
    core = core_of(interaction)
    streams, firsts = {}, []
    for job_id in result.job_ids:  # subscribed now: a short job may end while we defer
        events = core.events(job_id)
        firsts.append(asyncio.ensure_future(anext(events)))
        streams[job_id] = job_events(firsts[-1], events)
    await asyncio.sleep(0)
    asker = who(interaction)
    delivery = Delivery(
        result.job_id, interaction.channel_id, interaction.guild_id, asker.user_id, interaction, locale=asker.locale
    )
    if not deferred:
        try:
            await interaction.response.defer(thinking=True)
        except discord.HTTPException:  # the interaction expired meanwhile: the result goes to the channel
            delivery.interaction = None
        except BaseException:
            for first in firsts:
                first.cancel()
            raise
    client = interaction.client
    if result.candidates:
        core.followers.start(result.job_id, follow_candidates(client, delivery, streams))
    else:
        core.followers.start(result.job_id, follow_job(client, delivery, streams[result.job_id]))


async def job_events(first: asyncio.Future, rest: AsyncIterator) -> AsyncIterator:
    yield await first
    async for event in rest:
        yield event
