"""Discord's composing commands, /compose and /continue: slash-command options become an intent
for the command service (ranges re-checked with `bot.grammar.RANGES`, since a forged payload
skips Discord's own checks), and the result is answered or followed (`bot.discord.delivery`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.app_commands import Choice, Range

from bot.core import MAX_PRIMER_BYTES, ComposeTrack, ContinueMidi, TrackAsk
from bot.discord.delivery import start_job
from bot.discord.talk import core_of, origin, say, text_of, tr, withdraw
from bot.discord.translator import described
from bot.grammar import (
    RANGES,
    SAMPLING_KEYS,
    Compose,
    UsageError,
    arrangement_of,
    bounds,
    genre_of,
    instrument_of,
    range_of,
)
from bot.grammar import checked as grammar_checked
from bot.i18n import N_
from bot.replies import UNREADABLE, Reply
from generator.arrangements import ARRANGEMENTS
from generator.controls import ATTRIBUTES as CONTROLS
from generator.controls import LEVELS, WORDS, ControlError, parse_level
from generator.instruments import INSTRUMENTS
from generator.vocab import GENRES, display_name

GENRE_CHOICES = [Choice(name=display_name(g), value=g) for g in GENRES]
ARRANGEMENT_CHOICES = [Choice(name=a, value=a) for a in ARRANGEMENTS]  # the words typed in every language
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


def _range(name: str) -> Any:
    """An `app_commands.Range` with the chat bounds of `bot.grammar.RANGES` (or its CHAT_RANGES)."""
    r = range_of(name)
    return Range[int, int(r.low), int(r.high)] if r.whole else Range[float, r.low, r.high]


Temperature, TopP, RpPenalty, RpRestore = (
    _range(n) for n in ("temperature", "top_p", "rp_penalty", "rp_restore_speed")
)
Seed, TopK, AtLeastK, Count = (_range(n) for n in ("seed", "top_k", "at_least_k", "count"))
Seconds = Range[int, int(RANGES["seconds"].low), int(RANGES["seconds"].high)]
TrackId = Range[int, 1, 10**12 - 1]


async def instrument_choices(interaction: discord.Interaction, current: str) -> list[Choice[str]]:
    typed = current.lower().strip()
    return [Choice(name=i, value=i) for i in INSTRUMENTS if typed in i][:25]


def checked(name: str, value: float | None) -> float | int | None:
    """A value Discord should have range-checked, checked again (a forged payload skips Discord)."""
    return None if value is None else grammar_checked(range_of(name), name, f"{value!r}")


@app_commands.command(description=N_("Compose a piano track"))
@app_commands.describe(
    genre=N_("the style (or your /settings default)"),
    temperature=described(N_("randomness ({bounds})"), bounds=bounds(RANGES["temperature"])),
    seconds=N_("length in seconds"),
    seed=N_("the same seed composes the same piece"),
    top_k=N_("sample among the k likeliest events (0: off)"),
    top_p=N_("nucleus mass"),
    at_least_k=N_("never sample from fewer than k events"),
    rp_penalty=N_("repetition penalty per repeated note (0: off)"),
    rp_restore_speed=N_("penalty restored per second"),
    instrument=N_("what plays it"),
    arrangement=N_("solo piano, or the genre's band around it (the genre's own by default)"),
    density=N_("notes per second (the genre's own by default)"),
    loudness=N_("how loud on average (the genre's own by default)"),
    polyphony=N_("notes sounding at once (the genre's own by default)"),
    count=described(
        N_("how many to compose at once, to keep the one you like ({bounds}; 1: just one)"),
        bounds=bounds(range_of("count")),
    ),
)
@app_commands.choices(
    genre=GENRE_CHOICES,
    arrangement=ARRANGEMENT_CHOICES,
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
    count: Count | None = None,
    arrangement: Choice[str] | None = None,
) -> None:
    given = locals()
    try:
        levels = {a: level_of(a, given[a].value) for a in CONTROLS if given[a] is not None}
        cmd = Compose(
            genre=genre_of(genre.value) if genre else None,
            seconds=checked("seconds", seconds),
            seed=checked("seed", seed),
            instrument=instrument_of(instrument) if instrument else None,
            sampling={k: checked(k, given[k]) for k in SAMPLING_KEYS if k in RANGES and given[k] is not None} | levels,
            count=checked("count", count) or 1,
            arrangement=arrangement_of(arrangement.value) if arrangement else None,
        )
    except UsageError as exc:  # found without the database: answered at once
        await say(interaction, f"🤔 {exc.said(tr(interaction))}")
        return
    await interaction.response.defer(thinking=True)  # before any database or job work: Discord's 3 seconds
    await start_job(interaction, await core_of(interaction).compose(ComposeTrack(origin(interaction), cmd)))


@app_commands.command(name="continue", description=N_("Continue a track, or a MIDI file you attach"))
@app_commands.describe(
    track=N_("the track number, as in #42"),
    midi=described(N_("or a MIDI file of yours to continue (up to {most} MB)"), most=MAX_PRIMER_BYTES // 1_000_000),
    genre=N_("for a MIDI file: the style (or your /settings default)"),
)
@app_commands.choices(genre=GENRE_CHOICES)
async def continue_command(
    interaction: discord.Interaction,
    track: TrackId | None = None,
    midi: discord.Attachment | None = None,
    genre: Choice[str] | None = None,
) -> None:
    t = tr(interaction)
    if track is not None and midi is not None:
        await say(interaction, t.gettext("🤔 give `track:` or `midi:`, not both"))
        return
    if track is None and midi is None:
        await say(
            interaction, t.gettext("🤔 give `track:` (a track number, as in #42) or attach a MIDI file as `midi:`")
        )
        return
    if track is not None and genre is not None:
        await say(
            interaction, t.gettext("🤔 a track continues in its own genre; `genre:` is for an attached MIDI file")
        )
        return
    if midi is not None:
        await continue_midi(interaction, midi, genre_of(genre.value) if genre else None)
        return
    await interaction.response.defer(thinking=True)
    await start_job(interaction, await core_of(interaction).continue_track(TrackAsk(origin(interaction), track)))


async def continue_midi(interaction: discord.Interaction, midi: discord.Attachment, genre: str | None) -> None:
    """/continue midi: a declared size over the limit is answered at once; then the interaction is
    deferred, before the database (a genre, the rate limits) and the download, either of which may
    outlast Discord's 3 seconds; a refusal, or a file that turns out unusable, is answered privately
    (an unusable file counted against the limits: they bound downloads too)."""
    core, t = core_of(interaction), tr(interaction)
    if midi.size > MAX_PRIMER_BYTES:  # never downloaded
        text = t.gettext("🙅 that file is {size} MB; attach a MIDI file up to {most} MB")
        await say(interaction, text.format(size=f"{midi.size / 1e6:.1f}", most=MAX_PRIMER_BYTES // 1_000_000))
        return
    await interaction.response.defer(thinking=True)
    ask = ContinueMidi(origin(interaction), genre, f"discord-attachment:{midi.id}")
    refusal = await core.prepare_midi(ask)  # a missing genre, then the limits: before anything is downloaded
    if refusal is not None:
        await start_job(interaction, refusal)
        return
    try:
        data = await midi.read()
    except (discord.HTTPException, aiohttp.ClientError, OSError):  # expired, deleted, or the CDN unreachable
        unreadable = Reply(t.gettext("I couldn't download that file; attach it again"), kind=UNREADABLE)
        await withdraw(interaction, text_of(unreadable))
        return
    await start_job(interaction, await core.continue_midi(ask, data))
