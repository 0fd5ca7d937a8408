"""Band mode: the composed piano arranged for a genre's band (bass, drums, pads), from the piano's
own pulse and harmony. No model runs: the same notes render solo or with a band, and a recipe's
seed makes the band's choices, so it reproduces exactly.

    midi = band_midi_of(notes, "jazz", seed=42, program=0)   # piano + named parts, drums on ch. 10
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .. import vocab as V
from ..midi_libs import pretty_midi
from ..tokenizer import Note
from .analysis import Harmony, analyse
from .dynamics import Dynamics
from .parts import PIANO_MIX, Mix, Part, PartNote, band_midi
from .styles import PIANO_REVERB, STYLES

LOW_VOICE = 60  # a piano note under middle C that is its chord's lowest is part of the bass line


def band_parts(notes: Sequence[Note], genre: str, seed: int) -> tuple[Harmony, list[Part]]:
    """The recognised harmony of the piano `notes` and the genre's band around them."""
    genre = V.canonical_genre(genre)
    harmony = analyse(notes)
    dynamics = Dynamics.of(notes)
    end = max((n.end for n in notes), default=0) * V.TICK_SECONDS
    rnd = random.Random(f"{seed}:band:{genre}")
    return harmony, STYLES[genre](harmony, dynamics, rnd, lowest_voice(notes), end)


def band_midi_of(notes: Sequence[Note], genre: str, seed: int, program: int = 0) -> pretty_midi.PrettyMIDI:
    """The piano on `program` with the genre's band: one named track per part."""
    _, parts = band_parts(notes, genre, seed)
    mix = Mix(PIANO_MIX.volume, PIANO_MIX.pan, PIANO_REVERB[V.canonical_genre(genre)], PIANO_MIX.chorus)
    return band_midi(notes, program, parts, mix)


def lowest_voice(notes: Sequence[Note], together: int = 3) -> list[PartNote]:
    """The piano's bass line: the lowest note of each onset (notes within `together` ticks strike
    together), where it is under middle C."""
    out: list[PartNote] = []
    group: list[Note] = []
    for n in [*sorted(notes), None]:
        if group and (n is None or n.start - group[0].start > together):
            low = min(group, key=lambda m: m.pitch)
            if low.pitch < LOW_VOICE:
                out.append(PartNote(low.start * V.TICK_SECONDS, low.end * V.TICK_SECONDS, low.pitch, low.velocity))
            group = []
        if n is not None:
            group.append(n)
    return out
