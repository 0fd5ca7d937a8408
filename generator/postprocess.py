"""Clean-ups the reference applies to a generated piece, and the check for a degenerate one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

from . import vocab as V
from .tokenizer import Note, decode_notes

MAX_PAUSE_SECONDS = 3.0
VELOCITY_RANGE = (30, 100)
DEGENERATE_SHARE = 0.9


def remove_long_pauses(tokens: Sequence[int], max_seconds: float = MAX_PAUSE_SECONDS) -> list[int]:
    """Drop runs of time shifts longer than `max_seconds` during which nothing sounds."""
    out: list[int] = []
    sounding: set[int] = set()
    run: list[int] = []

    def flush() -> None:
        silent = not sounding
        if not (silent and sum(V.shift_ticks(t) for t in run) * V.TICK_SECONDS > max_seconds):
            out.extend(run)
        run.clear()

    for tok in tokens:
        if V.is_time_shift(tok):
            run.append(tok)
            continue
        flush()
        if V.is_note_on(tok):
            sounding.add(tok - V.NOTE_ON)
        elif V.is_note_off(tok):
            sounding.discard(tok - V.NOTE_OFF)
        out.append(tok)
    flush()
    return out


def clip_velocities(tokens: Iterable[int], low: int = VELOCITY_RANGE[0], high: int = VELOCITY_RANGE[1]) -> list[int]:
    """Keep every set-velocity token within [low, high] (the model sometimes writes fortissimo)."""
    lo_tok = V.VELOCITY + V.velocity_to_bin(low)
    hi_tok = V.VELOCITY + V.velocity_to_bin(high)
    return [min(max(t, lo_tok), hi_tok) if V.is_velocity(t) else t for t in tokens]


def repetition_share(notes: Sequence[Note]) -> float:
    """Share of consecutive same-pitch notes that are glued end-to-start (no gap at all)."""
    by_pitch: dict[int, list[Note]] = {}
    for n in sorted(notes, key=lambda n: (n.pitch, n.start)):
        by_pitch.setdefault(n.pitch, []).append(n)
    pairs = glued = 0
    for run in by_pitch.values():
        for a, b in pairwise(run):
            pairs += 1
            glued += b.start - a.end < 1  # within one 10 ms tick
    return glued / pairs if pairs else 0.0


def is_degenerate(tokens: Sequence[int], threshold: float = DEGENERATE_SHARE) -> bool:
    """A piece with no note at all, or mostly one key hammered without release; the caller
    should regenerate rather than hand anyone a silent or stuck track."""
    notes = decode_notes(tokens)
    return not notes or repetition_share(notes) > threshold


def postprocess(tokens: Sequence[int]) -> list[int]:
    """The reference's clean-up: long silences dropped, velocities clipped to 30–100."""
    return clip_velocities(remove_long_pauses(tokens))
