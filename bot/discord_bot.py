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

    client = build_client(runner, db, store, test_guild_id=1234)
    await client.start(token)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
from discord import app_commands, ui
from discord.app_commands import Choice, Range
from sqlalchemy import select

from bot.core import (
    DEFAULT_SECONDS,
    child_request,
    compose_request,
    continue_request,
    midi_continue_request,
    numbered_page,
    set_favourite,
    track_caption,
    track_line,
)
from bot.grammar import GENRE_NAMES, RANGES, SAMPLING_KEYS, Compose, UsageError, genre_of, instrument_of
from bot.limits import Limits
from bot.replies import (
    ACTIONS,
    BUTTON,
    ButtonPress,
    parse_button,
    progress_line,
    track_buttons,
)
from generator import GeneratorError
from generator.instruments import INSTRUMENTS
from generator.vocab import GENRES, display_name
from jobs.api import MAX_PRIMER_BYTES, ComposeRequest, JobBackend, JobEvent, Refused, primer_from_midi
from storage import ArtifactStore, Database, Forbidden, Job, JobState, NotFound, Track, User
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
HELP = (
    "🎹 I compose piano music.\n\n"
    "`/compose genre:ambient` — a track (genres: {genres}); options: temperature, seconds, seed, top_k, "
    "top_p, at_least_k, rp_penalty, rp_restore_speed, instrument\n"
    "Under each track: 🔁 reroll, 🔥 hotter, ❄️ cooler, ⭐ favourite, ➕ continue, 📤 share — anyone in the "
    "channel may reroll a posted track; the new one is theirs.\n\n"
    "`/continue track:42` — more of a track · `/continue midi:<your .mid file> genre:jazz` — more of your own piece\n"
    "`/history` · `/favorites` · `/share track:42 channel:#music`\n"
    "`/settings` — your defaults · `/cancel` — stop your current track"
)


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


async def track_files(core: Core, track: Track, limit: int) -> list[discord.File]:
    """MP3, MIDI and piano roll, as many as fit the channel's attachment limit (the MP3 first)."""
    if track.mp3_key is None:
        raise NotFound(f"the audio of track #{track.id} has expired; /compose a new one")
    stem = f"{display_name(track.genre)}-{track.id}"
    files, room = [], limit
    for key, ext in ((track.mp3_key, "mp3"), (track.midi_key, "mid"), (track.png_key, "png")):
        if key is None:
            continue
        data = await asyncio.to_thread(core.store.get, key)
        if len(data) <= room:
            files.append(discord.File(io.BytesIO(data), filename=f"{stem}.{ext}"))
            room -= len(data)
    if not files:
        raise NotFound(f"track #{track.id} is larger than this channel's attachment limit")
    return files


# --- composing ---------------------------------------------------------------------------------


async def start_job(interaction: discord.Interaction, request: ComposeRequest) -> None:
    """Check the user's and the channel's rate limits, submit (a refusal is an ephemeral answer),
    defer, and follow the job in the background. Every action that composes comes through here."""
    core = core_of(interaction)
    if await job_exists(core, request.idempotency_key or ""):
        return  # the same interaction twice: the first is composing it, and it counts once
    limits: Limits = interaction.client.limits  # type: ignore[attr-defined]
    channel = f"{PLATFORM}-channel:{interaction.channel_id}" if interaction.channel_id else None
    refusal = limits.check(f"{PLATFORM}:{interaction.user.id}", channel)
    if refusal is not None:
        await say(interaction, f"⏳ {refusal}")
        return
    try:
        job_id = await core.backend.submit(request)
    except (Refused, GeneratorError) as exc:
        await say(interaction, f"🙅 {exc}")
        return
    events = core.backend.events(job_id)
    first = asyncio.ensure_future(anext(events))  # subscribed now: a short job may end while we defer
    await asyncio.sleep(0)
    try:
        await interaction.response.defer(thinking=True)
    except BaseException:
        first.cancel()
        raise
    interaction.client.follow(follow_job(interaction, job_events(first, events)))  # type: ignore[attr-defined]


async def job_events(first: asyncio.Future[JobEvent], rest: AsyncIterator[JobEvent]) -> AsyncIterator[JobEvent]:
    yield await first
    async for event in rest:
        yield event


async def follow_job(interaction: discord.Interaction, events: AsyncIterator[JobEvent]) -> None:
    """Edit the original response as the job advances (throttled; the final state always), then
    post the track with its buttons and record the posting as a share of this channel, so that
    anyone here may reroll it."""
    core = core_of(interaction)
    shown, last_edit, final = None, 0.0, None
    async with asyncio.timeout(FOLLOW_TIMEOUT_S):
        async for event in events:
            text = progress_line(event.kind, event.done, event.total, event.eta_s, event.position)
            if event.kind in ("failed", "cancelled") and event.reason and event.reason != "cancelled":
                text = f"{text}: {event.reason}"
            now = time.monotonic()
            if text != shown and (event.terminal or now - last_edit >= EDIT_INTERVAL_S):
                with contextlib.suppress(discord.NotFound):  # the response was dismissed
                    await interaction.edit_original_response(content=text)
                shown, last_edit = text, now
            if event.terminal:
                final = event
    if final is None or final.kind != "done" or final.track_id is None:
        return
    track = await core.db.run(lambda s: s.get(Track, final.track_id))
    owner = await core.db.run(lambda s: s.get(User, track.owner_id))
    files = await track_files(core, track, interaction.filesize_limit or DEFAULT_FILESIZE_LIMIT)
    # shared here before it appears, so a press the moment it does already passes the access check
    await core.db.run(lambda s: record_share(s, owner, track.id, here(interaction), None, here(interaction)))
    sent = await interaction.followup.send(embed=track_embed(track), files=files, view=track_view(track.id), wait=True)
    await core.db.run(lambda s: record_share(s, owner, track.id, here(interaction), sent.id, here(interaction)))


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
        await toggle_favourite(interaction, user, track, press.action == "fav")
    elif press.action == "continue":
        await start_job(interaction, continue_request(PLATFORM, track, user, uid, name, key))
    else:
        await start_job(interaction, child_request(PLATFORM, track, press.action, uid, name, key))


async def toggle_favourite(interaction: discord.Interaction, user: User, track: Track, favourite: bool) -> None:
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
    return None if value is None else RANGES[name].check(name, f"{value!r}")


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
)
@app_commands.choices(genre=GENRE_CHOICES)
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
) -> None:
    core = core_of(interaction)
    uid, name = who(interaction)
    given = locals()
    try:
        cmd = Compose(
            genre=genre_of(genre.value) if genre else None,
            seconds=checked("seconds", seconds),
            seed=checked("seed", seed),
            instrument=instrument_of(instrument) if instrument else None,
            sampling={k: checked(k, given[k]) for k in SAMPLING_KEYS if given[k] is not None},
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
        try:
            primer = await attached_primer(midi)
            request = midi_continue_request(
                PLATFORM,
                primer,
                f"discord-attachment:{midi.id}",
                genre_of(genre.value) if genre else None,
                user,
                uid,
                name,
                key,
            )
        except Refused as exc:
            await say(interaction, f"🙅 {exc}")
            return
        except UsageError as exc:
            await say(interaction, f"🤔 {exc}")
            return
        await start_job(interaction, request)
        return
    try:
        found = await readable_track(core, interaction, user, track)
    except (NotFound, Forbidden) as exc:
        await say(interaction, f"🤔 {exc}")
        return
    await start_job(interaction, continue_request(PLATFORM, found, user, uid, name, key))


async def attached_primer(midi: discord.Attachment) -> tuple[int, ...]:
    """An attached MIDI file as a primer. Its declared size is checked first, so an oversized file
    is never downloaded; parsing runs in a thread, off the event loop."""
    limit_mb = MAX_PRIMER_BYTES // 1_000_000
    if midi.size > MAX_PRIMER_BYTES:
        raise Refused(f"that file is {midi.size / 1e6:.1f} MB; attach a MIDI file up to {limit_mb} MB")
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

    async def unfinished(s):
        user = await get_or_create_user(s, PLATFORM, uid)
        q = select(Job.id).where(Job.user_id == user.id, Job.state.in_((JobState.queued, JobState.running)))
        return list((await s.execute(q.order_by(Job.id.desc()))).scalars())

    for job_id in await core.db.run(unfinished):
        if await core.backend.cancel(job_id, PLATFORM, uid):
            await say(interaction, "✖️ Cancelled your track.")
            return
    await say(interaction, "Nothing to cancel: you have no track being composed.")


@app_commands.command(name="help", description="How to talk to me")
async def help_command(interaction: discord.Interaction) -> None:
    await say(interaction, HELP.format(genres=GENRE_NAMES))


COMMANDS = (compose, continue_command, history_command, favorites, share, settings, cancel, help_command)


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
        self._following: set[asyncio.Task] = set()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(TrackButton)
        if self.test_guild is not None:  # a guild's commands update at once: fast iteration
            self.tree.copy_global_to(guild=self.test_guild)
            await self.tree.sync(guild=self.test_guild)
        else:
            await self.tree.sync()

    def follow(self, coro) -> asyncio.Task:
        """Run a job follower in the background, keeping a reference and logging its failure."""
        task = asyncio.get_running_loop().create_task(coro)
        self._following.add(task)
        task.add_done_callback(self._followed)
        return task

    def _followed(self, task: asyncio.Task) -> None:
        self._following.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("following a job failed: %s: %s", exc.__class__.__name__, exc)

    async def close(self) -> None:
        for task in list(self._following):
            task.cancel()
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


__all__ = ["Core", "MelomaniaClient", "TrackButton", "build_client", "track_view"]
