"""MIDI ⇄ event tokens in the published music-composer vocabulary.

Encoding quantizes every note to 10 ms ticks, resolves overlapping notes of one pitch (so that
decoding gives back exactly the notes that were encoded), and writes a velocity token before every
note-on, as the reference encoder does in practice: the published weights were trained on that.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import vocab as V
from .errors import PrimerError
from .midi_libs import pretty_midi


@dataclass(frozen=True, order=True)
class Note:
    """A note on the 10 ms grid: start and end in ticks, end > start."""

    start: int
    end: int
    pitch: int
    velocity: int


def notes_of(midi: pretty_midi.PrettyMIDI, piano_range: bool = False) -> list[Note]:
    """All non-drum notes on the tick grid from the first note on, same-pitch overlaps resolved."""
    lo, hi = V.PIANO_RANGE if piano_range else (0, 127)
    raw: list[Note] = []
    for inst in midi.instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            if not lo <= n.pitch <= hi:
                continue
            start = round(n.start / V.TICK_SECONDS)
            end = max(round(n.end / V.TICK_SECONDS), start + 1)  # a very short note still sounds
            raw.append(Note(max(start, 0), max(end, 1), n.pitch, min(max(n.velocity, 0), 127)))
    notes = _resolve_overlaps(raw)
    # Leading silence carries no music; the reference encoder drops it too.
    first = notes[0].start if notes else 0
    return [Note(n.start - first, n.end - first, n.pitch, n.velocity) for n in notes]


def _resolve_overlaps(notes: Iterable[Note]) -> list[Note]:
    # One pitch sounds once at a time: a note is cut where the next one of its pitch starts,
    # and of two notes starting together the longer one wins.
    by_pitch: dict[int, list[Note]] = {}
    for n in sorted(notes, key=lambda n: (n.pitch, n.start, -n.end)):
        run = by_pitch.setdefault(n.pitch, [])
        if run and run[-1].start == n.start:
            continue
        if run and run[-1].end > n.start:
            prev = run[-1]
            run[-1] = Note(prev.start, n.start, prev.pitch, prev.velocity)
        run.append(n)
    return sorted(n for run in by_pitch.values() for n in run)


def encode_notes(notes: Sequence[Note]) -> list[int]:
    """Notes on the tick grid → event tokens (no genre token)."""
    # (tick, order, pitch): at one instant note-offs come first, so a re-struck key reads as
    # release-then-press rather than a press the decoder would ignore.
    events: list[tuple[int, int, int, int]] = []
    for n in notes:
        events.append((n.start, 1, n.pitch, n.velocity))
        events.append((n.end, 0, n.pitch, 0))
    events.sort()
    tokens: list[int] = []
    now = 0
    for tick, order, pitch, velocity in events:
        tokens.extend(time_shift_tokens(tick - now))
        now = tick
        if order == 0:
            tokens.append(V.NOTE_OFF + pitch)
        else:
            tokens.append(V.VELOCITY + V.velocity_to_bin(velocity))
            tokens.append(V.NOTE_ON + pitch)
    return tokens


def time_shift_tokens(ticks: int) -> list[int]:
    """A gap of `ticks` × 10 ms as whole-second shifts plus the remainder."""
    whole, rest = divmod(ticks, V.MAX_SHIFT_TICKS)
    out = [V.TIME_SHIFT + V.MAX_SHIFT_TICKS - 1] * whole
    if rest:
        out.append(V.TIME_SHIFT + rest - 1)
    return out


def encode_midi(midi: pretty_midi.PrettyMIDI, piano_range: bool = False) -> list[int]:
    return encode_notes(notes_of(midi, piano_range=piano_range))


def decode_notes(tokens: Iterable[int]) -> list[Note]:
    """Event tokens → notes. Genre, end and pad tokens are skipped."""
    open_notes: dict[int, tuple[int, int]] = {}  # pitch → (start tick, velocity)
    notes: list[Note] = []
    now = 0
    velocity = V.DEFAULT_VELOCITY
    for tok in tokens:
        tok = int(tok)
        if V.is_note_on(tok):
            open_notes.setdefault(tok - V.NOTE_ON, (now, velocity))
        elif V.is_note_off(tok):
            pitch = tok - V.NOTE_OFF
            if pitch in open_notes:
                start, vel = open_notes.pop(pitch)
                if now > start:
                    notes.append(Note(start, now, pitch, vel))
        elif V.is_velocity(tok):
            velocity = V.bin_to_velocity(tok - V.VELOCITY)
        elif V.is_time_shift(tok):
            now += V.shift_ticks(tok)
    for pitch, (start, vel) in open_notes.items():
        if now > start:
            notes.append(Note(start, now, pitch, vel))
    return sorted(notes)


def notes_to_midi(notes: Iterable[Note], program: int = 0) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, name="piano")
    for n in notes:
        inst.notes.append(
            pretty_midi.Note(
                velocity=n.velocity,
                pitch=n.pitch,
                start=n.start * V.TICK_SECONDS,
                end=n.end * V.TICK_SECONDS,
            )
        )
    midi.instruments.append(inst)
    return midi


def decode_midi(tokens: Iterable[int], program: int = 0) -> pretty_midi.PrettyMIDI:
    return notes_to_midi(decode_notes(tokens), program=program)


def duration_seconds(tokens: Iterable[int]) -> float:
    """Seconds of music the time shifts in `tokens` add up to."""
    return sum(V.shift_ticks(t) for t in tokens if V.is_time_shift(int(t))) * V.TICK_SECONDS


def load_midi(source: str | os.PathLike[str] | bytes) -> pretty_midi.PrettyMIDI:
    """Read a MIDI file (path or bytes), raising PrimerError for anything that isn't one."""
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise PrimerError(f"cannot read MIDI file {os.fspath(source)!r}: {exc.strerror}") from None
    if not data.startswith(b"MThd"):
        raise PrimerError(f"not a MIDI file ({MIDI_FAULTS['not_midi']})", "not_midi")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # mido and pretty_midi raise many types for broken files
        fault = midi_fault(exc, data)
        raise PrimerError(f"the MIDI file is damaged: {MIDI_FAULTS[fault]}", fault) from None


HEADER_BYTES = 14  # "MThd", its length (6) and format, track count and division
# What can be wrong with a MIDI file, in words a person can check it against (English; a front end
# translates them by key). "damaged" is for what the parser reports that none of the others names.
MIDI_FAULTS = {
    "not_midi": "it does not start with a MIDI header, MThd",
    "cut_header": "it ends inside its header",
    "cut_track": "it ends inside a track (cut off while copying, perhaps)",
    "no_track_header": "a track does not start with its MTrk header",
    "bad_event": "a track holds an event that is not valid MIDI",
    "no_timing": "its header gives no timing (a division of 0)",
    "no_notes": "it has no notes to continue",
    "damaged": "it is damaged and cannot be read",
}


def midi_fault(exc: Exception, data: bytes) -> str:
    """What the parser's exception (mido's, under pretty_midi) says is wrong: a MIDI_FAULTS key.
    mido's own messages are not for people (an EOFError says nothing at all)."""
    said = str(exc)
    if isinstance(exc, EOFError):
        return "cut_header" if len(data) < HEADER_BYTES else "cut_track"
    if "MTrk" in said:
        return "no_track_header"
    if isinstance(exc, ZeroDivisionError):
        return "no_timing"
    if "running status" in said or "data byte" in said or isinstance(exc, KeyError):
        return "bad_event"
    return "damaged"


def trim_notes(notes: Sequence[Note], seconds: float, side: Literal["start", "end"] = "start") -> list[Note]:
    """Keep the first (side='start') or last (side='end') `seconds` of a piece, starting at 0."""
    if not seconds > 0:
        raise PrimerError(f"primer length must be more than 0 seconds, got {seconds}")
    if side not in ("start", "end"):
        raise PrimerError(f"primer side must be 'start' or 'end', got {side!r}")
    span = round(seconds / V.TICK_SECONDS)
    if not notes:
        return []
    if side == "start":
        lo, hi = 0, span
    else:
        hi = max(n.end for n in notes)
        lo = max(hi - span, 0)
    kept = []
    for n in notes:
        start, end = max(n.start, lo), min(n.end, hi)
        if end > start:
            kept.append(Note(start, end, n.pitch, n.velocity))
    first = min((n.start for n in kept), default=0)  # a primer starts at its first note, as encode does
    return sorted(Note(n.start - first, n.end - first, n.pitch, n.velocity) for n in kept)


def primer_tokens(
    source: str | os.PathLike[str] | bytes,
    seconds: float | None = None,
    side: Literal["start", "end"] = "end",
    piano_range: bool = True,
) -> list[int]:
    """A user's MIDI as event tokens to continue from, optionally trimmed to `seconds`."""
    notes = notes_of(load_midi(source), piano_range=piano_range)
    if seconds is not None:
        notes = trim_notes(notes, seconds, side)
    if not notes:
        lo, hi = V.PIANO_RANGE
        raise PrimerError(f"the MIDI file has no notes to continue (piano notes {lo}–{hi} are used)", "no_notes")
    return encode_notes(notes)
