"""The Discord front end (discord.py 2.x): slash commands, and a persistent view under every track.

Like `bot.telegram`, this module only translates: slash-command options become a `Compose` (ranges
re-checked with `bot.grammar.RANGES`, since a forged payload skips Discord's own checks), a button's
custom id (`hotter:42`) becomes a `ButtonPress`, and the core's captions, progress lines and buttons
become embeds, edits of the original response and `DynamicItem` buttons, which parse their state
from the custom id and so keep working after a restart.

Every interaction is answered within Discord's 3 seconds: the quick checks (options, access to a
track, the backend accepting the job) run first and a problem is answered with an ephemeral
message; then the interaction is deferred and the job is followed in a background task that edits
the original response with progress and posts the track (MP3, MIDI, piano roll) as a follow-up.

Each job stores its channel (`ComposeRequest.reply_to`). An interaction's token lives 15 minutes
and not past a restart, so a job resumed on start-up, or one whose token expired meanwhile, is
posted into that channel instead, mentioning the user; a job is receipted (`backend.delivered`)
once its user has been shown how it ended.

    client = build_client(runner, db, store, test_guild_id=1234)
    await client.start(token)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import discord
from discord import app_commands, ui
from discord.app_commands import Choice, Range
from sqlalchemy import select

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
from bot.grammar import GENRE_NAMES, RANGES, SAMPLING_KEYS, Compose, UsageError, genre_of, instrument_of
from bot.grammar import checked as grammar_checked
from bot.limits import Limits
from bot.replies import (
    ACTIONS,
    BUTTON,
    FORGET_CONFIRM,
    ButtonPress,
    parse_button,
    progress_line,
    track_buttons,
)
from generator import GeneratorError
from generator.controls import ATTRIBUTES as CONTROLS
from generator.controls import LEVELS, WORDS, ControlError, parse_level
from generator.instruments import INSTRUMENTS
from generator.vocab import GENRES, display_name
from jobs.api import MAX_PRIMER_BYTES, ComposeRequest, JobBackend, JobEvent, Refused, primer_from_midi
from storage import ArtifactStore, Database, Forbidden, Job, NotFound, Track, User
from storage.shares import record_share
from storage.tracks import get_track as stored_track
from storage.users import get_or_create_user, set_defaults

log = logging.getLogger(__name__)

PLATFORM = "discord"
EDIT_INTERVAL_S = 1.0  # editing the original response: well under Discord's per-webhook rate limit
FOLLOW_TIMEOUT_S = 1200.0
PAGE_SIZE = 10
DEFAULT_FILESIZE_LIMIT = 10 * 1024 * 1024  # the smallest per-guild attachment limit
POSTABLE_CHANNELS = (
    discord.ChannelType.text,
    discord.ChannelType.news,
    discord.ChannelType.voice,
    discord.ChannelType.public_thread,
    discord.ChannelType.private_thread,
    discord.ChannelType.news_thread,
)
GENRE_CHOICES = [Choice(name=display_name(g), value=g) for g in GENRES]
LEVEL_CHOICES = {  # "sparse (low)", value 1
    a: [Choice(name=f"{WORDS[a][level][0]} ({LEVELS[level]})", value=level) for level in range(len(LEVELS))]
    for a in CONTROLS
}


def level_of(attribute: str, value: int) -> int:
    """A level Discord should have offered, checked again (a forged payload skips Discord)."""
    try:
        return parse_level(attribute, value)
    except ControlError as exc:
        raise UsageError(str(exc)) from None


HELP = (
    "🎹 I compose piano music.\n\n"
    "`/compose genre:ambient` — a track (genres: {genres}); options: temperature, seconds, seed, top_k, "
    "top_p, at_least_k, rp_penalty, rp_restore_speed, instrument\n"
    "Under each track: 🔁 reroll, 🔥 hotter, ❄️ cooler, ⭐ favourite, ➕ continue, 📤 share — anyone in the "
    "channel may reroll a posted track; the new one is theirs.\n\n"
    "`/continue track:42` — more of a track · `/continue midi:<your .mid file> genre:jazz` — more of your own piece\n"
    "`/history` · `/favorites` · `/share track:42 channel:#music`\n"
    "`/genres` — what I can play · `/settings` — your defaults · `/cancel` — stop your current track\n"
    "`/forgetme` — delete everything I keep about you"
)
GENRES_TEXT = (
    "Genres: {genres}.\nFor example: `/compose genre:ambient` or `/compose genre:jazz temperature:0.9 seconds:60`"
)
EXPIRED_WEBHOOK = (10015, 50027)  # Unknown Webhook, Invalid Webhook Token: the interaction's token is gone


def _range(name: str) -> Any:
    """An `app_commands.Range` with the chat bounds of `bot.grammar.RANGES`."""
    r = RANGES[name]
    return Range[int, int(r.low), int(r.high)] if r.whole else Range[float, r.low, r.high]


Temperature, TopP, RpPenalty, RpRestore = (
    _range(n) for n in ("temperature", "top_p", "rp_penalty", "rp_restore_speed")
)
Seed, TopK, AtLeastK = (_range(n) for n in ("seed", "top_k", "at_least_k"))
Seconds = Range[int, int(RANGES["seconds"].low), int(RANGES["seconds"].high)]
PageNumber = Range[int, 1, 1000]
TrackId = Range[int, 1, 10**12 - 1]


@dataclass(frozen=True)
class Core:
    """What every command shares: the job backend, the database and the artifact store."""

    backend: JobBackend
    db: Database
    store: ArtifactStore


# --- translating to Discord --------------------------------------------------------------------


def who(interaction: discord.Interaction) -> tuple[str, str]:
    return str(interaction.user.id), interaction.user.display_name


def here(interaction: discord.Interaction) -> tuple[str, str]:
    """The channel the interaction came from (a DM is a channel too)."""
    return (PLATFORM, str(interaction.channel_id or interaction.user.id))


async def say(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer, whether or not the interaction was answered already."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def withdraw(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer after a public defer. Discord makes the first follow-up take the public
    "thinking…" placeholder's place, ignoring its ephemeral flag; so the placeholder is resolved
    and deleted first, and the answer then goes out as a private follow-up."""
    with contextlib.suppress(discord.HTTPException):  # gone already: the follow-up still reaches the user
        await interaction.edit_original_response(content="🤔")
        await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)


def may_post_here(interaction: discord.Interaction) -> bool:
    """Whether the user may send messages where they pressed a button (in a DM, always: Discord
    resolves no permissions there). In a thread the right is "send messages in threads"."""
    if interaction.guild_id is None:
        return True
    allowed = interaction.permissions
    in_thread = isinstance(interaction.channel, discord.Thread)
    return bool(allowed.send_messages_in_threads if in_thread else allowed.send_messages)


def token_expired(exc: discord.HTTPException) -> bool:
    """Whether Discord refused a call on the interaction's webhook because its token is gone
    (15 minutes passed), so only the channel itself can still be reached."""
    return exc.status == 401 or exc.code in EXPIRED_WEBHOOK


def core_of(interaction: discord.Interaction) -> Core:
    return interaction.client.core  # type: ignore[attr-defined]


async def known_user(core: Core, interaction: discord.Interaction) -> User:
    uid, name = who(interaction)
    return await core.db.run(lambda s: get_or_create_user(s, PLATFORM, uid, name))


async def readable_track(core: Core, interaction: discord.Interaction, user: User, track_id: int) -> Track:
    """The track if the user may read it here: theirs, or one posted or shared in this channel."""
    return await core.db.run(lambda s: stored_track(s, track_id, user, here(interaction)))


async def job_exists(core: Core, key: str) -> bool:
    return await core.db.run(lambda s: s.scalar(select(Job.id).where(Job.idempotency_key == key))) is not None


class TrackButton(ui.DynamicItem[ui.Button], template=BUTTON):
    """🔁 🔥 ❄️ ⭐ ➕ 📤: the action and the track live in the custom id, so no state survives in memory."""

    def __init__(self, press: ButtonPress, row: int | None = None) -> None:
        style = discord.ButtonStyle.primary if press.action in ("hotter", "cooler") else discord.ButtonStyle.secondary
        super().__init__(
            ui.Button(label=ACTIONS[press.action], custom_id=f"{press.action}:{press.track_id}", style=style, row=row)
        )
        self.press = press

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> TrackButton:
        return cls(parse_button(match.group(0)))  # the template matched, so it parses

    async def callback(self, interaction: discord.Interaction) -> None:
        await on_button(interaction, self.press)


def track_view(track_id: int, favourite: bool = False) -> ui.View:
    view = ui.View(timeout=None)
    for row, buttons in enumerate(track_buttons(track_id, favourite)):
        for b in buttons:
            view.add_item(TrackButton(parse_button(b.data), row=row))
    return view


def track_embed(track: Track) -> discord.Embed:
    text = track_caption(track)
    title, _, recipe = text.partition("\n")
    return discord.Embed(title=title, description=recipe, colour=discord.Colour.blurple())


def size_text(size: int) -> str:
    """A file size as Discord's own limits are written (10 MB, 8 KB)."""
    return f"{size / 2**20:.1f} MB".replace(".0 MB", " MB") if size >= 2**20 else f"{max(1, round(size / 1024))} KB"


async def track_files(core: Core, track: Track, limit: int) -> list[discord.File]:
    """The MP3, then the MIDI and the piano roll as far as they fit the channel's attachment limit.
    An MP3 over the limit by itself is refused (NotFound, with words for the user): a score
    without its sound is not the track."""
    if track.mp3_key is None:
        raise NotFound(f"the audio of track #{track.id} has expired; /compose a new one")
    stem = f"{display_name(track.genre)}-{track.id}"
    mp3 = await asyncio.to_thread(core.store.get, track.mp3_key)
    if len(mp3) > limit:
        raise NotFound(
            f"track #{track.id} is {size_text(len(mp3))}, over this channel's {size_text(limit)} "
            "attachment limit; compose a shorter one"
        )
    files, room = [discord.File(io.BytesIO(mp3), filename=f"{stem}.mp3")], limit - len(mp3)
    for key, ext in ((track.midi_key, "mid"), (track.png_key, "png")):
        if key is None:
            continue
        data = await asyncio.to_thread(core.store.get, key)
        if len(data) <= room:
            files.append(discord.File(io.BytesIO(data), filename=f"{stem}.{ext}"))
            room -= len(data)
    return files


def refusal_reason(exc: discord.HTTPException) -> str:
    """Why Discord refused to post something, in words for the user."""
    if exc.status == 413 or exc.code == 40005:
        return "it is larger than this channel accepts"
    if exc.status == 403:
        return "I'm not allowed to post files here"
    return f"Discord answered {exc.status} ({exc.text or 'no reason given'})"


# --- delivering a job --------------------------------------------------------------------------


@dataclass
class Delivery:
    """Where a job's ending goes. `interaction` is the one that asked, while its token lives; it is
    None for a job resumed after a restart and once the token has expired, and then the result is
    posted into the channel with a mention of the user."""

    job_id: int
    channel_id: int | None
    guild_id: int | None
    user_id: str
    interaction: discord.Interaction | None = None
    editing: bool = True  # whether the original response still takes progress edits

    @property
    def chat(self) -> tuple[str, str]:
        """The channel as `storage` names it (a DM is a channel too)."""
        return (PLATFORM, str(self.channel_id or self.user_id))


def reply_to(interaction: discord.Interaction) -> dict[str, Any] | None:
    """Where a job's result goes, stored with the job so that a restarted bot can still post it."""
    if interaction.channel_id is None:
        return None
    return {"channel_id": interaction.channel_id, "guild_id": interaction.guild_id}


def snowflake(value: Any) -> int | None:
    """A Discord id read back from a stored reply_to (an int, or digits); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def event_line(event: JobEvent) -> str:
    text = progress_line(event.kind, event.done, event.total, event.eta_s, event.position)
    if event.kind in ("failed", "cancelled") and event.reason and event.reason != "cancelled":
        text = f"{text}: {event.reason}"
    return text


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


async def post(client: MelomaniaClient, delivery: Delivery, text: str = "", **message: Any) -> discord.Message | None:
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


async def tell(client: MelomaniaClient, delivery: Delivery, text: str) -> bool:
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


def upload_limit(client: MelomaniaClient, delivery: Delivery) -> int:
    if delivery.interaction is not None and delivery.interaction.filesize_limit:
        return delivery.interaction.filesize_limit
    guild = client.get_guild(delivery.guild_id) if delivery.guild_id else None
    return guild.filesize_limit if guild is not None else DEFAULT_FILESIZE_LIMIT


async def post_track(client: MelomaniaClient, delivery: Delivery, track_id: int) -> bool:
    """Post the track with its buttons, recorded as shared in its channel so that anyone there may
    reroll it; or tell the user why it can't be posted. Whether they were shown either."""
    core = client.core
    track = await core.db.run(lambda s: s.get(Track, track_id))
    owner = await core.db.run(lambda s: s.get(User, track.owner_id))
    try:
        files = await track_files(core, track, upload_limit(client, delivery))
    except NotFound as exc:
        return await tell(client, delivery, f"⚠️ {exc}")
    # shared here before it appears, so a press the moment it does already passes the access check
    await core.db.run(lambda s: record_share(s, owner, track.id, delivery.chat, None, delivery.chat))
    try:
        sent = await post(client, delivery, embed=track_embed(track), files=files, view=track_view(track.id))
    except discord.HTTPException as exc:
        reason = refusal_reason(exc)
        return await tell(client, delivery, f"⚠️ I couldn't post track #{track.id}: {reason}")
    if sent is None:
        return False
    await core.db.run(lambda s: record_share(s, owner, track.id, delivery.chat, sent.id, delivery.chat))
    return True


async def show_progress(delivery: Delivery, events: AsyncIterator[JobEvent]) -> JobEvent | None:
    """Edit the original response as the job advances (throttled); returns the job's ending, or
    None when the events stop without one (the job stays undelivered for the next start)."""
    shown, last_edit = None, 0.0
    async with asyncio.timeout(FOLLOW_TIMEOUT_S):
        async for event in events:
            if event.terminal:
                return event
            text, now = event_line(event), time.monotonic()
            if text != shown and now - last_edit >= EDIT_INTERVAL_S:
                await edit_progress(delivery, text)
                shown, last_edit = text, now
    return None


async def follow_job(client: MelomaniaClient, delivery: Delivery, events: AsyncIterator[JobEvent]) -> None:
    """Show the job's progress, then its ending (the track, or why there is none), then give the
    backend its receipt, so that the next start does not deliver it again."""
    final = await show_progress(delivery, events)
    if final is None:
        return
    if final.kind == "done" and final.track_id is not None:
        await edit_progress(delivery, event_line(final))
        shown = await post_track(client, delivery, final.track_id)
    elif final.kind == "cancelled" and delivery.interaction is None:
        shown = True  # only the user cancels, and /cancel told them
    else:
        shown = await tell(client, delivery, event_line(final))
    if shown:
        await client.core.backend.delivered(delivery.job_id)


# --- composing ---------------------------------------------------------------------------------


def rate_refusal(interaction: discord.Interaction) -> str | None:
    """The user's and the channel's rate limits: None when they may compose (and then it counts),
    else the answer."""
    limits: Limits = interaction.client.limits  # type: ignore[attr-defined]
    channel = f"{PLATFORM}-channel:{interaction.channel_id}" if interaction.channel_id else None
    refusal = limits.check(f"{PLATFORM}:{interaction.user.id}", channel)
    return None if refusal is None else f"⏳ {refusal}"


async def start_job(interaction: discord.Interaction, request: ComposeRequest, counted: bool = False) -> None:
    """Check the rate limits (unless `counted` already), submit with where the result goes (a
    refusal is an ephemeral answer), defer unless done already, and follow the job in the
    background. Every action that composes comes through here."""
    core = core_of(interaction)
    deferred = interaction.response.is_done()  # /continue midi: defers before downloading the file
    answer = withdraw if deferred else say
    if await job_exists(core, request.idempotency_key or ""):
        return  # the same interaction twice: the first is composing it, and it counts once
    refusal = None if counted else rate_refusal(interaction)
    if refusal is not None:
        await answer(interaction, refusal)
        return
    try:
        job_id = await core.backend.submit(replace(request, reply_to=reply_to(interaction)))
    except (Refused, GeneratorError) as exc:
        await answer(interaction, f"🙅 {exc}")
        return
    events = core.backend.events(job_id)
    first = asyncio.ensure_future(anext(events))  # subscribed now: a short job may end while we defer
    await asyncio.sleep(0)
    delivery = Delivery(job_id, interaction.channel_id, interaction.guild_id, str(interaction.user.id), interaction)
    if not deferred:
        try:
            await interaction.response.defer(thinking=True)
        except discord.HTTPException:  # the interaction expired meanwhile: the result goes to the channel
            delivery.interaction = None
        except BaseException:
            first.cancel()
            raise
    client: MelomaniaClient = interaction.client  # type: ignore[assignment]
    client.follow(job_id, follow_job(client, delivery, job_events(first, events)))


async def job_events(first: asyncio.Future[JobEvent], rest: AsyncIterator[JobEvent]) -> AsyncIterator[JobEvent]:
    yield await first
    async for event in rest:
        yield event


NO_POSTING = (
    "🙅 You can't send messages in this channel, so I won't post a track here for you; "
    "use /compose in a channel where you can post, or in a DM with me."
)


async def on_button(interaction: discord.Interaction, press: ButtonPress) -> None:
    core = core_of(interaction)
    key = f"{PLATFORM}:{interaction.id}"
    uid, name = who(interaction)
    user = await known_user(core, interaction)
    try:
        track = await readable_track(core, interaction, user, press.track_id)
    except (NotFound, Forbidden) as exc:
        await say(interaction, f"🤔 {exc}")
        return
    if press.action == "share":
        await say(interaction, f"To share it, use `/share track:{track.id} channel:#your-channel`")
    elif press.action in ("fav", "unfav"):
        dm = interaction.guild_id is None  # in a server the buttons are everyone's and show no state
        await toggle_favourite(interaction, user, track, press.action == "fav" if dm else None)
    elif not may_post_here(interaction):  # the new track would be posted here, as if by them
        await say(interaction, NO_POSTING)
    elif press.action == "continue":
        await start_job(interaction, continue_request(PLATFORM, track, user, uid, name, key))
    else:
        await start_job(interaction, child_request(PLATFORM, track, press.action, uid, name, key))


async def toggle_favourite(interaction: discord.Interaction, user: User, track: Track, favourite: bool | None) -> None:
    """`favourite` None: turn the presser's favourite over (a server's button shows no state)."""
    core = core_of(interaction)
    now = await set_favourite(core.db, user, track.id, favourite, here(interaction))
    if interaction.guild_id is None:  # in a DM the buttons are only the user's: show the state
        await interaction.response.edit_message(view=track_view(track.id, now))
        await interaction.followup.send("⭐ Added to your favourites" if now else "Removed from your favourites")
    else:
        await say(interaction, "⭐ Added to your favourites" if now else "Removed from your favourites")


# --- slash commands ----------------------------------------------------------------------------


async def instrument_choices(interaction: discord.Interaction, current: str) -> list[Choice[str]]:
    typed = current.lower().strip()
    return [Choice(name=i, value=i) for i in INSTRUMENTS if typed in i][:25]


def checked(name: str, value: float | None) -> float | int | None:
    """A value Discord should have range-checked, checked again (a forged payload skips Discord)."""
    return None if value is None else grammar_checked(RANGES[name], name, f"{value!r}")


@app_commands.command(description="Compose a piano track")
@app_commands.describe(
    genre="the style (or your /settings default)",
    temperature="randomness (0.1–2)",
    seconds="length in seconds",
    seed="the same seed composes the same piece",
    top_k="sample among the k likeliest events (0: off)",
    top_p="nucleus mass",
    at_least_k="never sample from fewer than k events",
    rp_penalty="repetition penalty per repeated note (0: off)",
    rp_restore_speed="penalty restored per second",
    instrument="what plays it",
    density="notes per second (the genre's own by default)",
    loudness="how loud on average (the genre's own by default)",
    polyphony="notes sounding at once (the genre's own by default)",
)
@app_commands.choices(
    genre=GENRE_CHOICES,
    density=LEVEL_CHOICES["density"],
    loudness=LEVEL_CHOICES["loudness"],
    polyphony=LEVEL_CHOICES["polyphony"],
)
@app_commands.autocomplete(instrument=instrument_choices)
async def compose(
    interaction: discord.Interaction,
    genre: Choice[str] | None = None,
    temperature: Temperature | None = None,
    seconds: Seconds | None = None,
    seed: Seed | None = None,
    top_k: TopK | None = None,
    top_p: TopP | None = None,
    at_least_k: AtLeastK | None = None,
    rp_penalty: RpPenalty | None = None,
    rp_restore_speed: RpRestore | None = None,
    instrument: str | None = None,
    density: Choice[int] | None = None,
    loudness: Choice[int] | None = None,
    polyphony: Choice[int] | None = None,
) -> None:
    core = core_of(interaction)
    uid, name = who(interaction)
    given = locals()
    try:
        levels = {a: level_of(a, given[a].value) for a in CONTROLS if given[a] is not None}
        cmd = Compose(
            genre=genre_of(genre.value) if genre else None,
            seconds=checked("seconds", seconds),
            seed=checked("seed", seed),
            instrument=instrument_of(instrument) if instrument else None,
            sampling={k: checked(k, given[k]) for k in SAMPLING_KEYS if k in RANGES and given[k] is not None} | levels,
        )
        user = await known_user(core, interaction)
        request = compose_request(PLATFORM, cmd, user, uid, name, f"{PLATFORM}:{interaction.id}")
    except UsageError as exc:
        await say(interaction, f"🤔 {exc}")
        return
    await start_job(interaction, request)


@app_commands.command(name="continue", description="Continue a track, or a MIDI file you attach")
@app_commands.describe(
    track="the track number, as in #42",
    midi=f"or a MIDI file of yours to continue (up to {MAX_PRIMER_BYTES // 1_000_000} MB)",
    genre="for a MIDI file: the style (or your /settings default)",
)
@app_commands.choices(genre=GENRE_CHOICES)
async def continue_command(
    interaction: discord.Interaction,
    track: TrackId | None = None,
    midi: discord.Attachment | None = None,
    genre: Choice[str] | None = None,
) -> None:
    core = core_of(interaction)
    uid, name = who(interaction)
    key = f"{PLATFORM}:{interaction.id}"
    if track is not None and midi is not None:
        await say(interaction, "🤔 give `track:` or `midi:`, not both")
        return
    if track is None and midi is None:
        await say(interaction, "🤔 give `track:` (a track number, as in #42) or attach a MIDI file as `midi:`")
        return
    if track is not None and genre is not None:
        await say(interaction, "🤔 a track continues in its own genre; `genre:` is for an attached MIDI file")
        return
    user = await known_user(core, interaction)
    if midi is not None:
        await continue_midi(interaction, user, midi, genre_of(genre.value) if genre else None)
        return
    try:
        found = await readable_track(core, interaction, user, track)
    except (NotFound, Forbidden) as exc:
        await say(interaction, f"🤔 {exc}")
        return
    await start_job(interaction, continue_request(PLATFORM, found, user, uid, name, key))


async def continue_midi(
    interaction: discord.Interaction, user: User, midi: discord.Attachment, genre: str | None
) -> None:
    """/continue midi: what needs no download (the declared size, a genre, the rate limits) is
    checked and answered at once; then the interaction is deferred, since downloading and parsing
    may outlast Discord's 3 seconds, and a file that turns out unusable is answered privately after
    all (it counted against the limits: they bound downloads too)."""
    uid, name = who(interaction)
    try:
        check_declared_size(midi)
        # built with no primer yet, so that a missing genre is found before anything is downloaded
        request = midi_continue_request(
            PLATFORM, (), f"discord-attachment:{midi.id}", genre, user, uid, name, f"{PLATFORM}:{interaction.id}"
        )
    except Refused as exc:
        await say(interaction, f"🙅 {exc}")
        return
    except UsageError as exc:
        await say(interaction, f"🤔 {exc}")
        return
    refusal = rate_refusal(interaction)  # before downloading: the limits bound downloads too
    if refusal is not None:
        await say(interaction, refusal)
        return
    await interaction.response.defer(thinking=True)
    try:
        primer = await attached_primer(midi)
    except Refused as exc:
        await withdraw(interaction, f"🙅 {exc}")
        return
    await start_job(interaction, replace(request, primer=primer), counted=True)


def check_declared_size(midi: discord.Attachment) -> None:
    """Refused for a file Discord says is too large, so that it is never downloaded."""
    if midi.size > MAX_PRIMER_BYTES:
        limit_mb = MAX_PRIMER_BYTES // 1_000_000
        raise Refused(f"that file is {midi.size / 1e6:.1f} MB; attach a MIDI file up to {limit_mb} MB")


async def attached_primer(midi: discord.Attachment) -> tuple[int, ...]:
    """An attached MIDI file as a primer (Refused, with words for the user, when it can't be one);
    parsing runs in a thread, off the event loop."""
    check_declared_size(midi)
    try:
        data = await midi.read()
    except (discord.HTTPException, aiohttp.ClientError, OSError):  # expired, deleted, or the CDN unreachable
        raise Refused("I couldn't download that file; attach it again") from None
    return await asyncio.to_thread(primer_from_midi, data)


async def list_tracks(interaction: discord.Interaction, kind: str, page_no: int) -> None:
    core = core_of(interaction)
    user = await known_user(core, interaction)
    result = await numbered_page(core.db, user, kind, page_no, PAGE_SIZE)
    if result is None or not result.items:
        if page_no > 1:
            await say(interaction, f"There is no page {page_no}; try `/{kind}`")
        else:
            await say(interaction, "No tracks yet: try `/compose`" if kind == "history" else "No favourites yet")
        return
    title = "Your tracks" if kind == "history" else "Your favourites"
    lines = [f"{title} (page {page_no}):", *map(track_line, result.items)]
    if result.next_before is not None:
        lines.append(f"More: `/{kind} page:{page_no + 1}`")
    await say(interaction, "\n".join(lines))


@app_commands.command(name="history", description="Your tracks, newest first")
async def history_command(interaction: discord.Interaction, page: PageNumber = 1) -> None:
    await list_tracks(interaction, "history", page)


@app_commands.command(description="Your favourite tracks")
async def favorites(interaction: discord.Interaction, page: PageNumber = 1) -> None:
    await list_tracks(interaction, "favorites", page)


@app_commands.command(description="Post a track into a channel")
@app_commands.describe(track="the track number", channel="where to post it")
async def share(interaction: discord.Interaction, track: TrackId, channel: app_commands.AppCommandChannel) -> None:
    core = core_of(interaction)
    user = await known_user(core, interaction)
    try:
        found = await readable_track(core, interaction, user, track)
    except (NotFound, Forbidden) as exc:
        await say(interaction, f"🤔 {exc}")
        return
    if channel.type not in POSTABLE_CHANNELS:
        await say(interaction, f"🙅 I can only post into text channels, not {channel.mention}.")
        return
    allowed = channel.permissions  # the sharer's own permissions there, as Discord resolved them
    if not (allowed.view_channel and allowed.send_messages and allowed.attach_files):
        await say(interaction, f"🙅 You can't post files in {channel.mention}, so I won't share into it for you.")
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    target = interaction.client.get_partial_messageable(channel.id, guild_id=channel.guild_id)
    try:
        files = await track_files(core, found, interaction.filesize_limit or DEFAULT_FILESIZE_LIMIT)
        sent = await target.send(embed=track_embed(found), files=files, view=track_view(found.id))
    except discord.Forbidden:
        await say(interaction, f"🙅 I'm not allowed to post in {channel.mention}; ask an admin to let me in.")
        return
    except (discord.HTTPException, NotFound) as exc:
        await say(interaction, f"🙅 I couldn't post into {channel.mention}: {exc}")
        return
    await core.db.run(
        lambda s: record_share(s, user, found.id, (PLATFORM, str(channel.id)), sent.id, here(interaction))
    )
    await say(interaction, f"📤 Shared #{found.id} into {channel.mention}.")


@app_commands.command(description="Your defaults for /compose")
@app_commands.describe(genre="default genre", temperature="default temperature", seconds="default length")
@app_commands.choices(genre=GENRE_CHOICES)
@app_commands.autocomplete(instrument=instrument_choices)
async def settings(
    interaction: discord.Interaction,
    genre: Choice[str] | None = None,
    temperature: Temperature | None = None,
    seconds: Seconds | None = None,
    instrument: str | None = None,
) -> None:
    core = core_of(interaction)
    uid, name = who(interaction)
    try:
        values: dict[str, Any] = {}
        if genre is not None:
            values["genre"] = genre_of(genre.value)
        if temperature is not None:
            values["temperature"] = checked("temperature", temperature)
        if seconds is not None:
            values["seconds"] = round(checked("seconds", seconds))
        if instrument is not None:
            values["instrument"] = instrument_of(instrument)
    except UsageError as exc:
        await say(interaction, f"🤔 {exc}")
        return

    async def apply(s):
        user = await get_or_create_user(s, PLATFORM, uid, name)
        if values:
            await set_defaults(s, user, **values)
        return user

    user = await core.db.run(apply)
    shown_genre = display_name(user.default_genre) if user.default_genre else "none (say it each time)"
    temp = f"{user.default_temperature:g}" if user.default_temperature is not None else "the genre's preset"
    await say(
        interaction,
        f"{'✅ Saved. Your defaults:' if values else 'Your defaults:'}\ngenre: {shown_genre}\ntemperature: {temp}\n"
        f"length: {user.default_seconds or round(DEFAULT_SECONDS)} s\ninstrument: {user.default_instrument or 'piano'}",
    )


@app_commands.command(description="Stop the track being composed for you")
async def cancel(interaction: discord.Interaction) -> None:
    core = core_of(interaction)
    uid, _ = who(interaction)
    await say(interaction, await cancel_newest_job(core.backend, core.db, PLATFORM, uid))


class ForgetButton(ui.DynamicItem[ui.Button], template=r"^forgetme:(?P<choice>confirm|keep)$"):
    """The two answers under /forgetme's question. The choice lives in the custom id and what is
    deleted is always the presser's own data, so the question needs no state and survives a restart."""

    def __init__(self, choice: str) -> None:
        confirm = choice == "confirm"
        super().__init__(
            ui.Button(
                label="🗑 Delete everything" if confirm else "Keep it",
                style=discord.ButtonStyle.danger if confirm else discord.ButtonStyle.secondary,
                custom_id=f"forgetme:{choice}",
            )
        )
        self.choice = choice

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> ForgetButton:
        return cls(match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        if self.choice == "confirm":
            await forget(interaction)
        else:
            await interaction.response.edit_message(content="👍 Kept everything.", view=None)


async def forget(interaction: discord.Interaction) -> None:
    """As Telegram's /forgetme: the user's unfinished jobs are cancelled, then everything of theirs
    is deleted (storage.privacy.forget_user). Deferred first: deleting files may take a while."""
    core = core_of(interaction)
    uid, _ = who(interaction)
    await interaction.response.defer()
    done = await forget_everything(core.backend, core.db, core.store, PLATFORM, uid)
    await interaction.edit_original_response(content=done, view=None)


@app_commands.command(name="forgetme", description="Delete everything I keep about you")
async def forget_me(interaction: discord.Interaction) -> None:
    """Asks first, privately: nothing is deleted until the user presses the button."""
    view = ui.View(timeout=None)
    view.add_item(ForgetButton("confirm"))
    view.add_item(ForgetButton("keep"))
    await interaction.response.send_message(FORGET_CONFIRM, view=view, ephemeral=True)


@app_commands.command(description="The genres I can compose in")
async def genres(interaction: discord.Interaction) -> None:
    await say(interaction, GENRES_TEXT.format(genres=GENRE_NAMES))


@app_commands.command(name="help", description="How to talk to me")
async def help_command(interaction: discord.Interaction) -> None:
    await say(interaction, HELP.format(genres=GENRE_NAMES))


COMMANDS = (
    compose,
    continue_command,
    history_command,
    favorites,
    share,
    settings,
    cancel,
    genres,
    forget_me,
    help_command,
)


# --- the client --------------------------------------------------------------------------------


class MelomaniaClient(discord.Client):
    """A gateway client with the command tree and the track buttons; it needs no privileged intents
    (only `guilds`, which discord.py's interaction state relies on)."""

    def __init__(
        self, core: Core, test_guild_id: int | None = None, limits: Limits | None = None, **options: Any
    ) -> None:
        super().__init__(intents=discord.Intents(guilds=True), **options)
        self.core = core
        self.limits = limits or Limits()  # in memory: a restart forgives everyone, which is fine
        self.test_guild = discord.Object(test_guild_id) if test_guild_id else None
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self.on_app_command_error
        for command in COMMANDS:
            self.tree.add_command(command)
        self._following: dict[int, asyncio.Task] = {}  # job id → its follower
        self._resumed = False

    async def setup_hook(self) -> None:
        self.add_dynamic_items(TrackButton, ForgetButton)
        if self.test_guild is not None:  # a guild's commands update at once: fast iteration
            self.tree.copy_global_to(guild=self.test_guild)
            await self.tree.sync(guild=self.test_guild)
        else:
            await self.tree.sync()

    async def on_ready(self) -> None:
        """Resume delivering, once per process (READY comes again with every new gateway session).
        Not in setup_hook: `run all` logs in before it starts the runner that recovers those jobs."""
        if not self._resumed:
            self._resumed = True
            await self.resume_deliveries()

    async def resume_deliveries(self) -> int:
        """Follow every job of ours whose ending its user has not seen (still going, or ended while
        we were away) and that knows its channel, and post its result there: the interactions of a
        previous run are gone. Returns how many were picked up."""
        resumed = 0
        for pending in await self.core.backend.undelivered(PLATFORM):
            where = pending.request.reply_to or {}
            channel_id = snowflake(where.get("channel_id"))
            if channel_id is None or pending.job_id in self._following:
                continue  # not sent from a channel, or an interaction of this run already follows it
            delivery = Delivery(pending.job_id, channel_id, snowflake(where.get("guild_id")), pending.request.user_id)
            self.follow(pending.job_id, follow_job(self, delivery, self.core.backend.events(pending.job_id)))
            resumed += 1
        if resumed:
            log.info("resumed delivering %d jobs", resumed)
        return resumed

    def follow(self, job_id: int, coro: Coroutine[Any, Any, None]) -> None:
        """Follow a job in the background, one follower per job, keeping a reference to it and
        logging its failure."""
        if job_id in self._following:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._following[job_id] = task
        task.add_done_callback(lambda done: self._followed(job_id, done))

    def _followed(self, job_id: int, task: asyncio.Task) -> None:
        self._following.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            detail = f"{exc.status} {exc.text}" if isinstance(exc, discord.HTTPException) else exc.__class__.__name__
            log.error("following job %s failed: %s: %s", job_id, exc.__class__.__name__, detail)

    async def close(self) -> None:
        """Followers stop with the client; their jobs are resumed by the next start."""
        tasks = list(self._following.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # discord.py waits a moment after READY for guilds before it dispatches 'ready'; closed
        # within that moment, its waiting task would dispatch into a closed client and log a
        # traceback. discord.py cancels it itself only when a new READY arrives.
        ready = getattr(self._connection, "_ready_task", None)
        if ready is not None:
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
        await super().close()

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """One place for errors: an option discord.py could not convert (a forged choice or channel)
        is the user's; anything else is logged. Either way the user is told, privately."""
        if isinstance(error, app_commands.TransformerError):
            with contextlib.suppress(discord.HTTPException):
                await say(
                    interaction, f"🤔 {str(error.value)[:30]!r} is not one of the choices; pick one from the list"
                )
            return
        log.error("/%s failed: %s", interaction.command.name if interaction.command else "?", error)
        with contextlib.suppress(discord.HTTPException):
            await say(interaction, "⚠️ Something went wrong on my side; please try again.")


def build_client(
    backend: JobBackend,
    db: Database,
    store: ArtifactStore,
    test_guild_id: int | None = None,
    limits: Limits | None = None,
) -> MelomaniaClient:
    """The bot: slash commands (synced at start, to `test_guild_id` when given) and track buttons;
    `limits` bounds how fast each user and channel may compose (the defaults of `Limits` if None)."""
    return MelomaniaClient(Core(backend, db, store), test_guild_id, limits)


__all__ = ["Core", "ForgetButton", "MelomaniaClient", "TrackButton", "build_client", "track_view"]
