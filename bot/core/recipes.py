"""The job requests chat intents become: a /compose with the user's stored defaults filled in, and
🔁 / 🔥 / ❄️ / ➕ / 🎹 / 🎸 made from a stored track. `new_request` is the one place a `ComposeRequest` is built."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.core.requests import Remix, Who
from bot.grammar import GENRE_NAMES, Compose, UsageError, arrangement_of, instrument_of
from bot.i18n import N_
from bot.replies import child_temperature
from generator.params import RANGES, Overrides, draw_seed
from generator.vocab import END
from jobs.api import ComposeRequest, Piece
from storage import Track, User
from storage.tracks import unpack_tokens

DEFAULT_SECONDS = 30.0
PRIMER_TOKENS = 500  # how much of a track ➕ Continue carries over


def new_request(
    who: Who,
    key: str,
    genre: str,
    *,
    seconds: float | None,
    sampling: Overrides,
    instrument: str,
    tokens: int | None = None,
    seed: int | None = None,
    primer: tuple[int, ...] = (),
    primer_ref: str | None = None,
    parent_track_id: int | None = None,
    lineage: str | None = None,
    render: Piece | None = None,
    arrangement: str | None = None,
) -> ComposeRequest:
    """The job request for `who`, idempotent under `key`; `arrangement` None: the genre's own."""
    return ComposeRequest(
        platform=who.platform,
        user_id=who.user_id,
        genre=genre,
        display_name=who.name,
        locale=who.locale,
        seconds=seconds,
        tokens=tokens,
        sampling=sampling,
        seed=seed,
        instrument=instrument,
        primer=primer,
        primer_ref=primer_ref,
        parent_track_id=parent_track_id,
        lineage=lineage,
        idempotency_key=key,
        render=render,
        arrangement=arrangement,
    )


def compose_request(who: Who, key: str, cmd: Compose, user: User) -> ComposeRequest:
    """A /compose command with the user's stored defaults filled in where they typed nothing."""
    genre = cmd.genre or user.default_genre
    if genre is None:
        raise UsageError(N_("which genre? choose one of: {genres} (for example /compose ambient)"), genres=GENRE_NAMES)
    sampling = Overrides(**cmd.sampling)
    if sampling.temperature is None and user.default_temperature is not None:
        sampling = replace(sampling, temperature=user.default_temperature)
    return new_request(
        who,
        key,
        genre,
        seconds=cmd.seconds or user.default_seconds or DEFAULT_SECONDS,
        sampling=sampling,
        seed=cmd.seed,
        instrument=cmd.instrument or user.default_instrument or "piano",
        arrangement=cmd.arrangement,
    )


def group_keys(key: str, count: int) -> list[str]:
    """The idempotency keys of `count` jobs asked for at once: the update's own key for one, else
    key#1 … key#N, so that a redelivered update starts the same N jobs once."""
    return [key] if count == 1 else [f"{key}#{n}" for n in range(1, count + 1)]


def candidate_requests(request: ComposeRequest, count: int) -> list[ComposeRequest]:
    """`count` of the request, to pick one from (/compose count=3): each under its own key
    (`group_keys`) and at its own seed: the one given and those after it (so the group can be
    composed again), else drawn, all different."""
    if count == 1:
        return [request]
    if request.seed is not None:
        seeds = [(request.seed + n) % (int(RANGES["seed"].high) + 1) for n in range(count)]
    else:
        drawn: set[int] = set()
        while len(drawn) < count:
            drawn.add(draw_seed())
        seeds = list(drawn)
    keys = group_keys(request.idempotency_key or "", count)
    return [replace(request, seed=seed, idempotency_key=key) for seed, key in zip(seeds, keys)]


def length_of(track: Track) -> tuple[float | None, int | None]:
    """The track's length as its request gave it: (seconds, None) or (None, tokens)."""
    seconds = track.max_seconds if track.max_seconds is not None or track.max_new_tokens is None else None
    return seconds, track.max_new_tokens if track.max_seconds is None else None


def child_request(who: Who, key: str, track: Track, action: str, remix: Remix | None = None) -> ComposeRequest:
    """🔁 / 🔥 / ❄️: the same recipe again (its arrangement too), at a new seed (reroll) or a new
    temperature; `remix`'s length, temperature and instrument replace the track's where given."""
    remix = remix or Remix()
    recipe = Overrides.recorded(track.sampling)  # the track's whole recipe, kept but for its temperature
    temperature = remix.temperature
    if temperature is None:
        temperature = child_temperature(action, recipe.temperature or 1.0)
    length = {} if remix.seconds is None else {"seconds": remix.seconds, "tokens": None}
    return from_track(
        who,
        key,
        track,
        action,
        sampling=replace(recipe, temperature=temperature),
        seed=None if action == "reroll" else track.seed,
        instrument=remix.instrument or track.instrument,
        **length,
    )


def from_track(who: Who, key: str, track: Track, lineage: str, **changes: Any) -> ComposeRequest:
    """A child of `track`: its genre, length, recipe, seed, instrument and arrangement, with
    `changes` (any of `new_request`'s keywords) in their place."""
    seconds, tokens = length_of(track)
    kept: dict[str, Any] = {
        "seconds": seconds,
        "tokens": tokens,
        "sampling": Overrides.recorded(track.sampling),
        "seed": track.seed,
        "instrument": track.instrument,
        "arrangement": track.arrangement,
    }
    return new_request(who, key, track.genre, parent_track_id=track.id, lineage=lineage, **(kept | changes))


# What a 🎸 re-render into the arrangement the track has already is told.
ALREADY = {
    "solo": N_("track #{track_id} is solo piano already"),
    "band": N_("track #{track_id} is played with its band already"),
}


def rerender_request(
    who: Who, key: str, track: Track, instrument: str | None = None, arrangement: str | None = None
) -> ComposeRequest:
    """🎹 / 🎸: the track's own notes rendered on `instrument` (checked as inst= is) or in
    `arrangement` (solo, band), nothing composed; what is not given stays as the track had it, and
    the new track keeps the whole recipe, so that it still composes these notes."""
    played_on = track.instrument if instrument is None else instrument_of(instrument)
    arranged = track.arrangement if arrangement is None else arrangement_of(arrangement)
    if arranged != track.arrangement:  # (with a new instrument too, if asked: the bigger change names it)
        lineage = "arrangement"
    elif played_on != track.instrument:
        lineage = "instrument"
    elif instrument is not None:
        raise UsageError(
            N_("track #{track_id} is played on the {instrument} already; pick another instrument"),
            track_id=track.id,
            instrument=played_on,
        )
    else:
        raise UsageError(ALREADY[arranged], track_id=track.id)
    return from_track(
        who,
        key,
        track,
        lineage,
        instrument=played_on,
        arrangement=arranged,
        primer_ref=track.primer_ref,
        render=Piece(tuple(unpack_tokens(track.tokens)), track.model_id, track.checkpoint_sha256),
    )


def continue_request(who: Who, key: str, track: Track, user: User) -> ComposeRequest:
    """➕: a new piece in the track's genre, primed with its last few hundred events."""
    events = [t for t in unpack_tokens(track.tokens)[1:] if t < END]  # after the genre token
    return new_request(
        who,
        key,
        track.genre,
        seconds=track.max_seconds or user.default_seconds or DEFAULT_SECONDS,
        sampling=Overrides.recorded(track.sampling),
        instrument=track.instrument,
        primer=tuple(events[-PRIMER_TOKENS:]),
        primer_ref=f"track:{track.id}",
        parent_track_id=track.id,
        lineage="continue",
    )


def midi_continue_request(
    who: Who, key: str, primer: tuple[int, ...], primer_ref: str, genre: str | None, user: User
) -> ComposeRequest:
    """A continuation of a MIDI file the user sent (`primer`, from `jobs.api.primer_from_midi`):
    the genre they named or their default, and their stored length, temperature and instrument."""
    genre = genre or user.default_genre
    if genre is None:
        raise UsageError(
            N_("which genre should it continue in? choose one of: {genres}, or set a default genre"), genres=GENRE_NAMES
        )
    sampling = Overrides(temperature=user.default_temperature)
    return new_request(
        who,
        key,
        genre,
        seconds=user.default_seconds or DEFAULT_SECONDS,
        sampling=sampling,
        instrument=user.default_instrument or "piano",
        primer=tuple(primer),
        primer_ref=primer_ref,
        lineage="continue",
    )
