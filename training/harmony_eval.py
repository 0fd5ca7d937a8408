"""How well `generator.arrange.analysis` hears a realised lead sheet: ground truth per beat and a score.

A realisation by `training.jazz.realise_with_chords` knows its tempo, its metre and which chord sounds
when. Its chord symbols are folded into the analysis' QUALITIES (6 → maj, m6 and m-maj7 → min, every
dominant with its alterations → dom7, m7b5 → hdim, dim and dim7 → dim, sus chords → sus or sus2); an
augmented triad has no quality there and is left out of the score, as are beats with no chord and slash
chords: over a line cliché (Bbm, Bbm/A, Bbm/Ab, Bbm/G) the piano sounds Gø where the chart says Bbm, and
hearing Gø is no mistake.

The analysis' constants were chosen on every other parkR chart of the first 200 (seeds "tune:<id>") and
checked along the way on every 11th from the 601st (seeds "heldout:<id>"); `held_out` is neither: the
odd-numbered charts from the 201st on, less that check set, with seeds of their own.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from generator.arrange.analysis import ChordLabel, Harmony
from generator.tokenizer import Note, notes_of
from generator.vocab import TICK_SECONDS

from .chords import Chord
from .jazz import realise_with_chords
from .leadsheets import LeadSheet

TEMPO_TOLERANCE = 0.04


def held_out(sheets: Sequence[LeadSheet], n: int) -> list[tuple[LeadSheet, int]]:
    """`n` (sheet, seed) pairs the analysis was never tuned or checked on, spread evenly over `sheets`
    (the parkR charts in corpus order)."""
    pool = [s for i, s in enumerate(sheets) if i >= 200 and i % 2 == 1 and not (i >= 600 and i % 11 == 6)]
    step = max(len(pool) / max(n, 1), 1.0)
    chosen = [pool[int(k * step)] for k in range(min(n, len(pool)))]
    return [(s, zlib.crc32(f"report:{s.id}".encode())) for s in chosen]


def label_of(chord: Chord | None) -> ChordLabel | None:
    """The analysis' name for a lead-sheet chord; None for no chord and for an augmented triad."""
    if chord is None:
        return None
    root = chord.root
    if chord.third is None:
        return ChordLabel(root, "sus2" if 2 in chord.tensions and 5 not in chord.tensions else "sus")
    if chord.third == 3:
        if chord.fifth == 6:
            return ChordLabel(root, "hdim" if chord.seventh == 10 else "dim")
        return ChordLabel(root, "min7" if chord.seventh == 10 else "min")
    if chord.seventh == 10:
        return ChordLabel(root, "dom7")
    if chord.seventh == 11:
        return ChordLabel(root, "maj7")
    if chord.fifth == 8:
        return None  # augmented triad
    return ChordLabel(root, "maj")


@dataclass(frozen=True)
class Truth:
    """A realisation's beats as the analysis sees its notes (seconds from the first note)."""

    beats: tuple[float, ...]  # every beat of the performance, shifted like `notes_of` shifts the notes
    labels: tuple[ChordLabel | None, ...]  # the chord of each beat interval; None: not scored
    slash: tuple[bool, ...]  # the beat's chord has a bass other than its root (not scored either)
    bpm: float
    beats_per_bar: int


def realised_truth(sheet: LeadSheet, seed: int) -> tuple[list[Note], Truth]:
    """The notes of one realisation, as the arranger would get them, and what it really plays."""
    midi, spans = realise_with_chords(sheet, seed)
    notes = notes_of(midi)
    # notes_of starts the piece at its first note: the truth moves with it
    shift = min(round(n.start / TICK_SECONDS) for inst in midi.instruments for n in inst.notes) * TICK_SECONDS
    bpm = float(midi.get_tempo_changes()[1][0])
    seconds_per_beat = 60.0 / bpm
    n_beats = round(spans[-1][1] / seconds_per_beat)
    beats = tuple(k * seconds_per_beat - shift for k in range(n_beats + 1))
    chords = []
    for k in range(n_beats):
        middle = (k + 0.5) * seconds_per_beat
        chords.append(next((c for start, end, c in spans if start <= middle < end), None))
    slash = tuple(c is not None and c.bass_pc != c.root for c in chords)
    return notes, Truth(beats, tuple(label_of(c) for c in chords), slash, bpm, sheet.beats_per_bar)


@dataclass(frozen=True)
class Score:
    beats: int  # scored beats (a chord with a label, not a slash chord)
    slash: int  # beats left out for a slash chord
    both: int  # root and quality right
    root: int  # root right
    tempo: bool  # within TEMPO_TOLERANCE
    tempo_octave: bool  # within it at half, the same or double tempo
    meter: bool  # beats per bar right
    downbeat: bool  # tempo right and the first downbeat on a bar line


def score(harmony: Harmony, truth: Truth) -> Score:
    """Each scored beat asks the analysis for the chord at its middle: pulse and chords judged together."""
    both = root = n = 0
    for k, label in enumerate(truth.labels):
        if label is None or truth.slash[k]:
            continue
        heard = harmony.chord_at((truth.beats[k] + truth.beats[k + 1]) / 2)
        n += 1
        root += heard is not None and heard.root == label.root
        both += heard == label
    ratio = harmony.pulse.bpm / truth.bpm
    tempo = abs(ratio - 1) <= TEMPO_TOLERANCE
    octave = any(abs(ratio * f - 1) <= TEMPO_TOLERANCE for f in (0.5, 1.0, 2.0))
    pulse = harmony.pulse
    downbeat = False
    if tempo and pulse.beats:
        seconds_per_beat = 60.0 / truth.bpm
        at = (pulse.beats[min(pulse.first_downbeat, len(pulse.beats) - 1)] - truth.beats[0]) / seconds_per_beat
        bar_position = at % truth.beats_per_bar
        downbeat = min(bar_position, truth.beats_per_bar - bar_position) < 0.25
    return Score(n, sum(truth.slash), both, root, tempo, octave, pulse.beats_per_bar == truth.beats_per_bar, downbeat)
