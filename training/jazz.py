"""Jazz lead sheets → solo jazz-piano MIDI, realised by our own code, as training data for the "jazz" genre.

Real jazz piano MIDI is nearly absent from the corpus, but chord charts are plentiful: `leadsheets`
reads the parkR iRealBook charts and the Weimar Jazz Database solos, and this module plays them.

A performance is one piano in three layers, all placed in straight beats and swung only when they
become seconds: a bass line (walking quarters or a two-feel, MIDI 28–48), left-hand comping (rootless
A/B voicings or shells, MIDI 50–72, voice-led, on swung rhythm cells that change bar by bar and thicken
chorus by chorus) and the right hand (the source's melody, else an improvised chord-scale line in
swung eighths, phrased with rests, MIDI 60–88). Every choice comes from the seed.
"""

from __future__ import annotations

import math
import random
import zlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from generator.errors import GeneratorError
from generator.midi_libs import pretty_midi

from .chords import HIGHEST_PITCH, Chord, fold_into_piano, one_strike_per_key
from .leadsheets import (
    CODA_SECTIONS,
    FEELS,
    INTRO_SECTIONS,
    SOURCES,
    ChordSpan,
    LeadSheet,
    MelodyNote,
    iter_lead_sheets,
)

BASS_RANGE = (28, 48)
COMP_RANGE = (50, 72)  # lowest and highest note of a left-hand voicing
RIGHT_RANGE = (60, 88)

EPS = 1e-6


# ------------------------------------------------------------------------------------- chord voicings


@lru_cache(maxsize=4096)
def _scale_intervals(chord: Chord) -> frozenset[int]:
    """The chord scale the improvised line and the passing bass tones draw from."""
    if chord.is_diminished_seventh:
        return frozenset({0, 2, 3, 5, 6, 8, 9, 11})
    t = chord.tensions
    iv = set(chord.intervals)
    half_dim = chord.third == 3 and chord.fifth == 6
    if not iv & {1, 2, 3}:
        iv.add(2)
    if not iv & {5, 6}:
        sharp_four = 6 in t or (chord.fifth == 6 and not half_dim)
        iv.add(6 if sharp_four else 5)
    if not iv & {8, 9}:
        iv.add(8 if half_dim or chord.fifth == 8 else 9)
    if not iv & {10, 11}:
        iv.add(11 if chord.third == 4 or (chord.third == 3 and 9 in t) else 10)
    return frozenset(iv)


@lru_cache(maxsize=4096)
def _voicing_forms(chord: Chord, shells: bool) -> tuple[tuple[int, ...], ...]:
    """Interval stacks, bottom to top: rootless A form (3 5 7 9) and B form (7 9 3 5), or shells (3 7 / 7 3)."""
    if chord.is_diminished_seventh:
        dim = (3, 6, 9, 0)
        return tuple(dim[k:] + dim[:k] for k in range(4))
    t = chord.tensions
    third = chord.third if chord.third is not None else (5 if 5 in t or 2 not in t else 2)
    if chord.seventh is not None:
        seventh = chord.seventh
    elif chord.fifth == 8 and not t:
        seventh = 0  # augmented triad: root on top
    else:
        seventh = 8 if 8 in t and 9 not in t else 9  # triads and 6 chords: the sixth
    if 1 in t:
        ninth = 1
    elif 3 in t:
        ninth = 3
    elif chord.third == 3 and chord.fifth == 6 and 2 not in t:
        ninth = 0  # half-diminished: b3 b5 b7 R
    else:
        ninth = 2
    if chord.fifth == 8 or 8 in t:
        colour = 8
    elif chord.fifth == 6 or 6 in t:
        colour = 6
    elif chord.is_dominant or (9 in t and seventh != 9):
        colour = 9
    elif 5 in t and third != 5:
        colour = 5
    else:
        colour = 7
    if shells:
        return _unique((third, seventh, ninth)), _unique((seventh, third, colour))
    return _unique((third, colour, seventh, ninth)), _unique((seventh, ninth, third, colour))


def _unique(values: Sequence[int]) -> tuple[int, ...]:
    seen: list[int] = []
    for v in values:
        if v % 12 not in seen:
            seen.append(v % 12)
    return tuple(seen)


# ---------------------------------------------------------------------------------------- realisation


@dataclass(frozen=True)
class Arrangement:
    """Every choice `realise` draws from its seed before a note is placed."""

    tempo: float  # quarter notes per minute
    swing: float  # where an off-beat eighth falls within the beat: 0.5 straight, 0.67 triplet swing
    transpose: int  # semitones
    choruses: int
    comp_centre: int  # mean pitch the voicings gravitate to
    right_range: tuple[int, int]
    density: float  # 0 sparse … 1 busy, before the chorus-by-chorus build-up
    velocity: int  # base loudness
    shells: bool  # shell voicings instead of four-note rootless ones
    head_in_two: bool  # the first chorus of a swing tune in two-feel, walking after


@dataclass(frozen=True)
class _Span:
    start: float
    end: float
    chord: Chord | None


@dataclass(frozen=True)
class _Chorus:
    """A stretch of the performance with its own settings: the intro, each chorus, the coda."""

    start: float
    end: float
    density: float
    walking: bool
    soloing: bool  # the right hand improvises here
    shells: bool


@dataclass
class _Note:
    start: float  # beats, straight
    end: float
    pitch: int
    velocity: int
    legato: float = 1.0  # share of the swung length that sounds


class _Timeline:
    """The chord spans in performance order, with lookups by beat."""

    def __init__(self, spans: list[_Span]) -> None:
        self.spans = spans
        self.starts = [s.start for s in spans]
        self.end = spans[-1].end if spans else 0.0

    def index_at(self, t: float) -> int | None:
        i = bisect_right(self.starts, t + EPS) - 1
        return i if i >= 0 and t < self.spans[i].end - EPS else None

    def at(self, t: float) -> _Span | None:
        i = self.index_at(t)
        return None if i is None else self.spans[i]


def _draw_arrangement(sheet: LeadSheet, rnd: random.Random) -> Arrangement:
    feel = sheet.feel if sheet.feel in FEELS else "swing"
    if sheet.tempo:
        tempo = sheet.tempo * rnd.uniform(0.88, 1.12)
    elif feel == "ballad":
        tempo = rnd.uniform(56, 84)
    elif feel == "straight":
        tempo = rnd.uniform(100, 150)
    else:
        tempo = rnd.triangular(90, 220, 150)
    tempo = round(min(max(tempo, 50.0), 280.0), 1)
    if feel == "straight":
        swing = 0.5
    elif tempo > 220:
        swing = rnd.uniform(0.6, 0.62)  # fast tempos swing flatter
    else:
        swing = rnd.uniform(0.6, 0.67)
    if sheet.melody:
        choruses = 1
    else:
        form = sum(s.duration for s in sheet.chords if s.section not in INTRO_SECTIONS | CODA_SECTIONS)
        seconds = rnd.uniform(60, 180)
        choruses = max(1, min(5, round(seconds * tempo / 60 / max(form, 1.0))))
    low = rnd.randint(RIGHT_RANGE[0], RIGHT_RANGE[0] + 5)
    return Arrangement(
        tempo=tempo,
        swing=round(swing, 3),
        transpose=rnd.randint(-3, 3) if sheet.melody else rnd.randint(-5, 6),
        choruses=choruses,
        comp_centre=rnd.randint(57, 63),
        right_range=(low, rnd.randint(max(low + 16, RIGHT_RANGE[1] - 6), RIGHT_RANGE[1])),
        density=rnd.uniform(0.15, 0.5) if feel == "ballad" else rnd.uniform(0.25, 0.75),
        velocity=rnd.randint(60, 80),
        shells=rnd.random() < 0.3,
        head_in_two=rnd.random() < 0.5,
    )


def _perform(sheet: LeadSheet, arr: Arrangement, rnd: random.Random) -> tuple[_Timeline, list[_Chorus]]:
    """Lay out intro, choruses and coda as absolute spans, transposed, with per-chorus settings."""
    k = arr.transpose

    def chord(span: ChordSpan) -> Chord | None:
        return None if span.chord is None else span.chord.transposed(k)

    feel = sheet.feel
    if sheet.melody:
        spans = [_Span(s.start, s.end, chord(s)) for s in sheet.chords]
        walking = feel == "swing"
        return _Timeline(spans), [_Chorus(0.0, spans[-1].end, arr.density * 0.7, walking, False, arr.shells)]

    intro = [s for s in sheet.chords if s.section in INTRO_SECTIONS]
    coda = [s for s in sheet.chords if s.section in CODA_SECTIONS]
    form = [s for s in sheet.chords if s.section not in INTRO_SECTIONS | CODA_SECTIONS]
    spans: list[_Span] = []
    choruses: list[_Chorus] = []
    t = 0.0

    def lay(block: list[ChordSpan], density: float, walking: bool, soloing: bool, shells: bool) -> None:
        nonlocal t
        start = t
        for s in block:
            spans.append(_Span(t, t + s.duration, chord(s)))
            t += s.duration
        choruses.append(_Chorus(start, t, min(max(density, 0.0), 1.0), walking, soloing, shells))

    if intro:
        lay(intro, arr.density * 0.6, False, False, arr.shells)
    for n in range(arr.choruses):
        density = arr.density + 0.12 * n + rnd.uniform(-0.08, 0.08)
        if feel == "swing":
            walking = not (n == 0 and arr.head_in_two)
        elif feel == "ballad":
            walking = n == arr.choruses - 1 and n > 0 and rnd.random() < 0.4
        else:
            walking = False
        shells = arr.shells if rnd.random() < 0.8 else not arr.shells
        lay(form, density, walking, True, shells)
    if coda:
        last = choruses[-1]
        lay(coda, last.density, last.walking, True, last.shells)
    return _Timeline(spans), choruses


def _chorus_at(choruses: list[_Chorus], t: float) -> _Chorus:
    for c in choruses:
        if c.start - EPS <= t < c.end - EPS:
            return c
    return choruses[-1]


def _nearest(pc: int, ref: float, low: int, high: int, pull: float = 0.0, centre: float = 0.0) -> int:
    """The pitch of class `pc` in [low, high] closest to `ref` (optionally pulled towards `centre`)."""
    candidates = [p for p in range(low, high + 1) if p % 12 == pc % 12]
    return min(candidates, key=lambda p: (abs(p - ref) + pull * abs(p - centre), p))


# Bass ---------------------------------------------------------------------------------------------------


def _bass_line(tl: _Timeline, choruses: list[_Chorus], beats_per_bar: int, rnd: random.Random) -> list[_Note]:
    """Walking quarters (chord tone on each change, approach notes into the next) or a two-feel."""
    low, high = BASS_RANGE
    centre = 38
    out: list[_Note] = []
    prev = float(rnd.randint(34, 41))
    planned: int | None = None
    for beat in range(math.ceil(tl.end - EPS)):
        t = float(beat)
        i = tl.index_at(t)
        if i is None or tl.spans[i].chord is None:
            planned = None
            continue
        span = tl.spans[i]
        chord = span.chord
        assert chord is not None
        c = _chorus_at(choruses, t)
        first = span.start > t - 1 + EPS  # this chord began on (or since) the previous beat
        in_bar = beat % beats_per_bar
        reach = 1.0
        if not c.walking:
            if not (first or in_bar == 0 or (beats_per_bar == 4 and in_bar == 2)):
                continue
            reach = 2.0 - in_bar % 2 if beats_per_bar == 4 else float(beats_per_bar - in_bar)
        nxt = tl.spans[i + 1] if i + 1 < len(tl.spans) else None
        change_next = nxt is not None and nxt.chord is not None and nxt.start <= t + reach + EPS
        if first:
            pc = chord.bass_pc
            if planned is None or planned % 12 != pc:
                planned = _nearest(pc, prev, low, high, 0.3, centre)
            pitch, planned = planned, None
        elif change_next and nxt is not None and nxt.chord is not None and (c.walking or rnd.random() < 0.5):
            planned = _nearest(nxt.chord.bass_pc, prev, low, high, 0.3, centre)
            pitch = _approach(planned, int(prev), chord, rnd)
        elif not c.walking:  # root and fifth take turns over a long chord, now and then the third
            fifth = chord.fifth if chord.fifth is not None else 4
            choices = {chord.root: 3.0 if in_bar == 0 else 2.0, (chord.root + fifth) % 12: 2.0}
            if chord.third is not None:
                choices.setdefault((chord.root + chord.third) % 12, 0.7)
            choices.pop(int(prev) % 12, None)
            pc = rnd.choices(list(choices), list(choices.values()))[0]
            pitch = _nearest(pc, prev, low, high, 0.2, centre)
        else:
            pitch = _walking_tone(int(prev), chord, in_bar == 0, rnd)
        velocity = 78 if in_bar == 0 else 72
        out.append(_Note(t, t + reach, pitch, velocity + rnd.randint(-3, 3), 0.92 if c.walking else 0.9))
        prev = pitch
    for a, b in pairwise(out):
        a.end = min(a.end, b.start)
    return out


def _approach(target: int, prev: int, chord: Chord, rnd: random.Random) -> int:
    """A note leading into `target`: a half step either side, a scale step, or its dominant."""
    low, high = BASS_RANGE
    scale = {(chord.root + i) % 12 for i in _scale_intervals(chord)}
    steps = [p for p in (target - 2, target + 2) if p % 12 in scale]
    options = [(target - 1, 3.0), (target + 1, 3.0), (target + 7 if target + 7 <= high else target - 5, 1.5)]
    options += [(p, 1.0) for p in steps]
    options = [(p, w) for p, w in options if low <= p <= high and p != prev]
    if not options:
        return target - 1 if target - 1 >= low else target + 1
    return rnd.choices([p for p, _ in options], [w for _, w in options])[0]


def _walking_tone(prev: int, chord: Chord, downbeat: bool, rnd: random.Random) -> int:
    """A chord tone (or, between strong beats, a scale tone) a step or small leap from `prev`."""
    low, high = BASS_RANGE
    tones = {(chord.root + i) % 12 for i in (0, chord.third, chord.fifth, chord.seventh) if i is not None}
    scale = {(chord.root + i) % 12 for i in _scale_intervals(chord)}
    pitches, weights = [], []
    for p in range(max(low, prev - 7), min(high, prev + 7) + 1):
        if p == prev:
            continue
        w = 3.0 if p % 12 in tones else 0.0 if downbeat or p % 12 not in scale else 1.0
        if w:
            pitches.append(p)
            weights.append(w / (1 + abs(p - prev) / 3) / (1 + abs(p - 38) / 10))
    if not pitches:
        return _nearest(chord.root, prev, low, high)
    return rnd.choices(pitches, weights)[0]


# Comping ------------------------------------------------------------------------------------------------

# Rhythm cells per bar: (weight when sparse, weight when busy, hits as (beat in bar, length in beats)).
# A hit on an off-beat takes the chord sounding half a beat later, so 3.5 anticipates the next bar.
_CELLS: dict[tuple[str, int], tuple[tuple[float, float, tuple[tuple[float, float], ...]], ...]] = {
    ("swing", 4): (
        (3.0, 3.0, ((0, 1.0), (1.5, 0.5))),  # Charleston
        (1.0, 3.0, ((0, 1.0), (1.5, 1.0), (3.5, 1.0))),  # Charleston with a push into the next bar
        (2.0, 2.0, ((0, 1.0), (2.5, 1.0))),
        (1.0, 2.0, ((1, 0.5), (3, 0.5))),  # two and four
        (1.0, 2.0, ((0.5, 1.0), (2, 1.0))),
        (2.0, 1.0, ((3.5, 1.5),)),  # anticipation only
        (2.0, 1.0, ((1.5, 1.5),)),
        (3.0, 0.5, ((0, 3.0),)),
        (0.0, 2.0, ((0, 0.5), (1.5, 0.5), (2.5, 0.5), (3.5, 1.0))),
        (1.5, 0.2, ()),
    ),
    ("swing", 3): (
        (3.0, 1.0, ((0, 2.5),)),
        (2.0, 3.0, ((0, 1.0), (1.5, 1.0))),
        (1.0, 3.0, ((1, 0.5), (2, 0.5))),
        (1.0, 2.0, ((0, 1.0), (2.5, 1.0))),
        (2.0, 1.0, ((2.5, 1.5),)),
        (1.0, 0.2, ()),
    ),
    ("ballad", 4): (
        (3.0, 1.0, ((0, 4.0),)),
        (2.0, 2.0, ((0, 2.0), (2, 2.0))),
        (1.0, 2.0, ((0, 1.5), (1.5, 2.0))),
        (1.0, 2.0, ((0, 3.0), (3.5, 1.5))),
        (0.5, 2.0, ((0, 1.0), (1.5, 1.0), (2.5, 1.5))),
    ),
    ("ballad", 3): (
        (3.0, 1.0, ((0, 3.0),)),
        (1.0, 2.0, ((0, 1.5), (1.5, 1.5))),
        (1.0, 2.0, ((0, 2.0), (2.5, 1.5))),
    ),
    ("straight", 4): (
        (2.0, 3.0, ((0, 1.0), (1.5, 1.0), (3, 1.0))),  # bossa-like cells
        (2.0, 3.0, ((0.5, 1.0), (2, 1.0), (3.5, 1.0))),
        (3.0, 1.0, ((0, 2.0), (2, 2.0))),
        (2.0, 1.0, ((0, 3.5),)),
    ),
    ("straight", 3): (
        (2.0, 1.0, ((0, 3.0),)),
        (1.0, 3.0, ((0, 1.0), (1.5, 1.0))),
    ),
}


def _comping(
    tl: _Timeline, choruses: list[_Chorus], arr: Arrangement, sheet: LeadSheet, rnd: random.Random
) -> list[_Note]:
    bpb = sheet.beats_per_bar
    cells = _CELLS[(sheet.feel if sheet.feel in FEELS else "swing", bpb)]
    out: list[_Note] = []
    prev: tuple[int, ...] | None = None
    prev_span = -1

    def resolve(t: float) -> int | None:
        """The span a hit at `t` voices: an off-beat hit anticipates a chord that starts half a beat later."""
        if abs(t - math.floor(t) - 0.5) < EPS:
            i = tl.index_at(t + 0.5)
            if i is not None and tl.spans[i].chord is not None:
                return i
        i = tl.index_at(t)
        return i if i is not None and tl.spans[i].chord is not None else None

    hits: list[tuple[float, float, _Chorus]] = []  # (beat, length, chorus), every bar's cell
    for bar in range(math.ceil(tl.end / bpb - EPS)):
        b0 = float(bar * bpb)
        c = _chorus_at(choruses, b0)
        weights = [sparse * (1 - c.density) + busy * c.density + 0.05 for sparse, busy, _ in cells]
        bar_hits = [(b0 + pos, length) for pos, length in rnd.choices(cells, weights)[0][2]]
        voiced = {resolve(t) for t, _ in bar_hits}
        for i in range(bisect_right(tl.starts, b0 - EPS), len(tl.spans)):  # every chord starting here is heard
            span = tl.spans[i]
            if span.start >= b0 + bpb - EPS:
                break
            if span.chord is not None and i not in voiced:
                bar_hits.append((span.start, min(1.0, span.end - span.start)))
        hits.extend((t, length, c) for t, length in sorted(set(bar_hits)))

    for n, (t, length, c) in enumerate(hits):
        i = resolve(t)
        later = hits[n + 1][0] if n + 1 < len(hits) else math.inf
        if i is None or t >= tl.end - EPS or later <= t + EPS:
            continue  # no chord here, or another hit at the same moment (the later, longer one plays)
        span = tl.spans[i]
        assert span.chord is not None
        end = min(t + length, span.end, later)
        if end - t < 0.25 - EPS:
            continue
        fresh = i == prev_span and rnd.random() < 0.5  # the same chord again: move the voicing a little
        prev, prev_span = _voice(span.chord, prev, c.shells, arr.comp_centre, rnd, fresh), i
        offbeat = abs(t - math.floor(t) - 0.5) < EPS
        velocity = arr.velocity - 8 + (5 if offbeat else 0) + rnd.randint(-3, 3)
        out.extend(_Note(t, end, p, velocity, 0.85 if length <= 1 else 0.95) for p in prev)
    return out


def _voice(
    chord: Chord, prev: tuple[int, ...] | None, shells: bool, centre: int, rnd: random.Random, fresh: bool = False
) -> tuple[int, ...]:
    """The A or B form (or shell) placement closest to the previous voicing, kept near `centre`.

    `fresh` asks for a different placement than `prev` (a re-struck chord that shouldn't just repeat).
    """
    low, high = COMP_RANGE
    best: tuple[int, ...] = ()
    best_cost = math.inf
    for form in _voicing_forms(chord, shells):
        pcs = [(chord.root + i) % 12 for i in form]
        for bottom in range(low, high + 1):
            if bottom % 12 != pcs[0]:
                continue
            notes = [bottom]
            for pc in pcs[1:]:
                notes.append(notes[-1] + ((pc - notes[-1]) % 12 or 12))
            if notes[-1] > high:
                break
            mean = sum(notes) / len(notes)
            cost = 0.4 * abs(mean - centre) + rnd.random() * 1.5
            if prev and fresh:
                cost += 0.3 * _voice_distance(notes, prev) + (8.0 if tuple(notes) == prev else 0.0)
            elif prev:
                cost += _voice_distance(notes, prev)
            if cost < best_cost:
                best, best_cost = tuple(notes), cost
    return best


def _voice_distance(a: Sequence[int], b: Sequence[int]) -> float:
    if len(a) == len(b):
        return float(sum(abs(x - y) for x, y in zip(sorted(a), sorted(b))))
    near = sum(min(abs(x - y) for y in b) for x in a) + sum(min(abs(x - y) for x in a) for y in b)
    return near / 2


# Right hand ---------------------------------------------------------------------------------------------


def _improvised_line(tl: _Timeline, choruses: list[_Chorus], arr: Arrangement, rnd: random.Random) -> list[_Note]:
    """Phrases of swung eighths (some quarters, a rare triplet) over chord-scale tones, with rests between."""
    low, high = arr.right_range
    out: list[_Note] = []
    prev = rnd.randint(low + 6, high - 8)
    direction = rnd.choice((-1, 1))
    for c in choruses:
        if not c.soloing:
            continue
        t = c.start + rnd.choice((0.0, 0.5, 1.0, 2.0))
        while t < c.end - 1:
            length = rnd.choice((2, 3, 4, 4, 6, 8)) * (0.6 + c.density)
            phrase_end = min(c.end, t + round(length * 2) / 2)
            phrase: list[_Note] = []
            while t < phrase_end - EPS:
                span = tl.at(t)
                if span is None or span.chord is None:
                    t += 0.5
                    continue
                chord = span.chord
                on_beat = abs(t - round(t)) < EPS
                if on_beat and rnd.random() < 0.05 + 0.08 * c.density and t + 1 <= phrase_end:
                    for k in range(3):  # a triplet turn, left unswung
                        prev, direction = _line_step(prev, direction, chord, k == 0, low, high, rnd)
                        phrase.append(_Note(t + k / 3, t + (k + 1) / 3, prev, 0, 0.9))
                    t += 1
                    continue
                step = 1.0 if on_beat and rnd.random() < 0.3 - 0.2 * c.density else 0.5
                prev, direction = _line_step(prev, direction, chord, on_beat, low, high, rnd)
                phrase.append(_Note(t, t + step, prev, 0, 0.9))
                t += step
            rest = rnd.choice((1.0, 1.5, 2.0, 3.0, 4.0)) * (1.3 - c.density)
            next_phrase = math.ceil((phrase_end + rest) * 2 - EPS) / 2
            if phrase:
                last = phrase[-1]
                span = tl.at(last.start)
                if span is not None and span.chord is not None:  # land on a chord tone and hold it
                    ch = span.chord
                    ivs = [i for i in (ch.third, ch.fifth, ch.seventh, *ch.tensions) if i is not None]
                    before = phrase[-2].pitch if len(phrase) > 1 else None
                    landing = [_nearest(ch.root + i, last.pitch, low, high) for i in ivs or [0]]
                    landing = [p for p in landing if p != before] or landing
                    last.pitch = min(landing, key=lambda p: (abs(p - last.pitch), p))
                    last.end = min(c.end, next_phrase, last.start + rnd.choice((1.0, 1.5, 2.0)))
                    prev = last.pitch
                out.extend(_shape_velocities(phrase, arr.velocity + 8, rnd))
            t = next_phrase
    return out


def _line_step(
    prev: int, direction: int, chord: Chord, strong: bool, low: int, high: int, rnd: random.Random
) -> tuple[int, int]:
    """The next note of the line: a scale step mostly, an arpeggio leap sometimes, a chromatic step rarely."""
    if prev >= high - 2:
        direction = -1
    elif prev <= low + 2:
        direction = 1
    elif rnd.random() < 0.18:
        direction = -direction
    tones = {(chord.root + i) % 12 for i in chord.intervals}
    pool = tones if strong else {(chord.root + i) % 12 for i in _scale_intervals(chord)}
    r = rnd.random()
    if not strong and r < 0.12 and low <= prev + direction <= high:
        return prev + direction, direction  # chromatic passing tone
    skip = 1 if r < 0.75 else 2

    def ahead() -> list[int]:
        reach = range(prev + direction, prev + direction * 13, direction)
        return [p for p in reach if low <= p <= high and p % 12 in pool]

    candidates = ahead()
    if len(candidates) < skip:
        direction = -direction
        candidates = ahead() or [prev]
    return candidates[min(skip, len(candidates)) - 1], direction


def _shape_velocities(phrase: list[_Note], base: int, rnd: random.Random) -> list[_Note]:
    """Louder as the line climbs, off-beats leaned on a little, the odd note ghosted."""
    for n in phrase:
        offbeat = abs(n.start - math.floor(n.start) - 0.5) < EPS
        v = base + (n.pitch - 72) * 0.4 + (4 if offbeat else 0) + rnd.randint(-3, 3)
        if rnd.random() < 0.06:
            v -= 18
        n.velocity = round(v)
    return phrase


def _melody_line(melody: Sequence[MelodyNote], arr: Arrangement) -> list[_Note]:
    """The source's line, transposed and moved by octaves into the right hand's register."""
    pitches = sorted(n.pitch + arr.transpose for n in melody)
    low, high = arr.right_range
    shift = 12 * round(((low + high) / 2 - pitches[len(pitches) // 2]) / 12)
    out = []
    for n in melody:
        p = n.pitch + arr.transpose + shift
        while p > HIGHEST_PITCH - 3:
            p -= 12
        while p < low - 5:
            p += 12
        out.append(_Note(n.start, n.start + n.duration, p, arr.velocity + 8 + round((p - 72) * 0.3)))
    return out


def _ending(
    notes: dict[str, list[_Note]], tl: _Timeline, arr: Arrangement, bpb: int, improvised: bool, rnd: random.Random
) -> float | None:
    """The last chord rings (a bar at most, and a beat over): bass root, one voicing, a chord tone on top.

    Returns the beat the ring ends on, or None where the performance just stops.
    """
    last = tl.spans[-1]
    if last.chord is None or last.end - last.start > 2 * bpb:
        return None  # a solo that ends over a long vamp just stops with it
    t0, t1 = last.start, last.start + min(last.end - last.start, bpb) + 1.0
    layers = ("bass", "comp", "right") if improvised else ("bass", "comp")
    for layer in layers:
        notes[layer] = [n for n in notes[layer] if n.start < t0 - EPS]
        for n in notes[layer]:
            n.end = min(n.end, t0)
    chord = last.chord
    notes["bass"].append(_Note(t0, t1, _nearest(chord.bass_pc, 36, *BASS_RANGE), arr.velocity + 4))
    voicing = _voice(chord, None, False, arr.comp_centre, rnd)
    notes["comp"].extend(_Note(t0, t1, p, arr.velocity) for p in voicing)
    if improvised:
        top = max(voicing)
        plain = chord.fifth == 7 and not chord.tensions & {1, 3}
        pc = chord.root + (2 if plain else chord.third or 5)
        pitch = _nearest(pc, top + 8, top + 1, top + 12)
        notes["right"].append(_Note(t0, t1, pitch, arr.velocity + 4))
    return t1


def _on_grid(t: float) -> bool:
    """On the straight sixteenth-note grid (triplets and recorded durations are not)."""
    return abs(t * 4 - round(t * 4)) < 1e-4


def _swing(t: float, ratio: float) -> float:
    """Straight beats → swung beats: the off-beat eighth moves to `ratio`; off-grid times (triplets) stay."""
    if not _on_grid(t):
        return t
    beat = math.floor(t + EPS)
    f = max(0.0, t - beat)
    return beat + (f * 2 * ratio if f <= 0.5 else ratio + (f - 0.5) * 2 * (1 - ratio))


def _to_midi(notes: list[_Note], arr: Arrangement, beats_per_bar: int, rnd: random.Random) -> pretty_midi.PrettyMIDI:
    """Swing, seconds, a few milliseconds and velocity steps of humanising, and no key struck while held."""
    seconds_per_beat = 60.0 / arr.tempo
    placed: list[list[float]] = []
    for n in notes:
        s = _swing(n.start, arr.swing)
        e = _swing(n.end, arr.swing) if _on_grid(n.end) else s + (n.end - n.start)
        e = s + max(e - s, 0.05) * n.legato
        start = max(0.0, s * seconds_per_beat + max(-0.01, min(0.01, rnd.gauss(0, 0.004))))
        end = max(start + 0.03, e * seconds_per_beat + max(-0.01, min(0.01, rnd.gauss(0, 0.004))))
        velocity = min(120, max(20, n.velocity + rnd.randint(-4, 4)))
        placed.append([start, end, float(fold_into_piano(n.pitch)), float(velocity)])
    kept = one_strike_per_key(placed, gap=0.005, together=0.04)
    midi = pretty_midi.PrettyMIDI(initial_tempo=arr.tempo)
    midi.time_signature_changes.append(pretty_midi.TimeSignature(beats_per_bar, 4, 0.0))
    piano = pretty_midi.Instrument(program=0, name="Jazz piano")
    piano.notes = [pretty_midi.Note(int(v), int(p), s, e) for s, e, p, v in kept]
    midi.instruments.append(piano)
    return midi


def realise(sheet: LeadSheet, seed: int) -> pretty_midi.PrettyMIDI:
    """One solo jazz-piano performance of `sheet`; the same seed gives the same MIDI."""
    return _realisation(sheet, seed)[0]


def realise_with_chords(
    sheet: LeadSheet, seed: int
) -> tuple[pretty_midi.PrettyMIDI, tuple[tuple[float, float, Chord | None], ...]]:
    """`realise`'s MIDI (the very same) and the chord it plays when: (start, end, chord) in seconds.

    The spans are the performance's own timeline (intro, choruses, coda, transposed), the ground truth
    for harmony analysis. Beats are not swung, so a span's edges are exact; the last chord runs to the
    end of its final ring where there is one. An off-beat comping hit that anticipates the next chord
    by half a beat still counts as the earlier span, as a listener would hear it.
    """
    midi, tempo, tl, ring_end = _realisation(sheet, seed)
    seconds_per_beat = 60.0 / tempo
    spans = [(s.start * seconds_per_beat, s.end * seconds_per_beat, s.chord) for s in tl.spans]
    if ring_end is not None:
        start, _, chord = spans[-1]
        spans[-1] = (start, ring_end * seconds_per_beat, chord)
    return midi, tuple(spans)


def _realisation(sheet: LeadSheet, seed: int) -> tuple[pretty_midi.PrettyMIDI, float, _Timeline, float | None]:
    """The MIDI, its tempo, its chord timeline in beats, and the beat its last ring ends on (None: no ring)."""
    if not sheet.chords:
        raise GeneratorError(f"lead sheet {sheet.id!r} has no chords to realise")
    if sheet.beats_per_bar not in (3, 4):
        raise GeneratorError(f"lead sheet {sheet.id!r} is in {sheet.beats_per_bar}/4; only 3/4 and 4/4 are realised")
    rnd = random.Random(seed)
    arr = _draw_arrangement(sheet, rnd)
    tl, choruses = _perform(sheet, arr, rnd)
    notes = {
        "bass": _bass_line(tl, choruses, sheet.beats_per_bar, random.Random(f"{seed}:bass")),
        "comp": _comping(tl, choruses, arr, sheet, random.Random(f"{seed}:comp")),
        "right": (
            _melody_line(sheet.melody, arr)
            if sheet.melody
            else _improvised_line(tl, choruses, arr, random.Random(f"{seed}:right"))
        ),
    }
    ring_end = _ending(notes, tl, arr, sheet.beats_per_bar, not sheet.melody, rnd)
    everything = notes["bass"] + notes["comp"] + notes["right"]
    midi = _to_midi(everything, arr, sheet.beats_per_bar, random.Random(f"{seed}:humanise"))
    return midi, arr.tempo, tl, ring_end


def realise_corpus(
    root: Path,
    versions: int = 1,
    limit: int | None = None,
    seed: int = 0,
    *,
    sources: Collection[str] = SOURCES,
    skipped: Counter[str] | None = None,
) -> Iterator[tuple[str, pretty_midi.PrettyMIDI, str]]:
    """(piece id, MIDI, licence and source note) for `versions` realisations of each of the first `limit` sheets."""
    for n, sheet in enumerate(iter_lead_sheets(root, skipped, sources)):
        if limit is not None and n >= limit:
            return
        for v in range(versions):
            piece_seed = zlib.crc32(f"{seed}:{sheet.id}:{v}".encode())
            note = f"{sheet.title} — {sheet.source}; {sheet.licence}; realised by training.jazz, seed {piece_seed}"
            yield f"{sheet.id}/v{v}", realise(sheet, piece_seed), note
