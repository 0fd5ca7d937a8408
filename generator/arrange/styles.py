"""Each genre's band, written around the composed piano from its recognised pulse and chords.

Every style is a pure function of the piano's harmony, its dynamics and a seeded `random.Random`,
so a recipe gives the same arrangement every time. On the beat, bass notes are tones of the chord
recognised there; passing tones sit between beats (a walking bass's chromatic approach is a swung
pickup before the change), as a player would place them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .analysis import QUALITIES, ChordLabel, Harmony
from .dynamics import Dynamics
from .parts import Mix, Part, PartNote

# General MIDI programs (0-based) and drum keys
ACOUSTIC_BASS, FINGERED_BASS, CONTRABASS, STRINGS, WARM_PAD, HALO_PAD = 32, 33, 43, 48, 89, 94
STANDARD_KIT, BRUSH_KIT = 0, 40
KICK, SIDE_STICK, SNARE, CLOSED_HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE = 36, 37, 38, 42, 44, 46, 49, 51
TOMS = (50, 48, 47, 45)  # high to low, for a fill
BASS_RANGE = (28, 52)  # E1 to E3
PAD_RANGE = (48, 76)
DRONE_RANGE = (31, 43)
SWING = 2 / 3  # where the swung "and" falls within a beat
COLOUR_ORDER = (3, 4, 10, 11, 9, 2, 5, 6, 7, 8, 1)  # a chord's tones, the ones that name it first


@dataclass(frozen=True)
class Span:
    """Beats `first`..`last` (inclusive) under one chord, `start`..`end` in seconds."""

    first: int
    last: int
    start: float
    end: float
    chord: ChordLabel


def spans(h: Harmony) -> Iterator[Span]:
    """Runs of beats under the same chord (a new bar does not break a run)."""
    beats, chords = h.pulse.beats, h.chords
    i = 0
    while i < len(chords):
        chord = chords[i]
        j = i
        while j + 1 < len(chords) and chords[j + 1] == chord:
            j += 1
        if chord is not None:
            yield Span(i, j, beats[i], beats[j + 1], chord)
        i = j + 1


def nearest(pc: int, ref: float, lo: int, hi: int) -> int:
    """The pitch of pitch class `pc` within lo..hi closest to `ref`."""
    return min((p for p in range(lo, hi + 1) if p % 12 == pc), key=lambda p: (abs(p - ref), p))


def fifth_of(chord: ChordLabel) -> int:
    """The chord's own fifth (diminished in a dim chord) as a pitch class; the root where it has none."""
    fifths = [i for i in QUALITIES[chord.quality] if 6 <= i <= 8]
    return (chord.root + (fifths[0] if fifths else 0)) % 12


def downbeat(h: Harmony, i: int) -> bool:
    return (i - h.pulse.first_downbeat) % h.pulse.beats_per_bar == 0


def bar_of(h: Harmony, i: int) -> int:
    return (i - h.pulse.first_downbeat) // h.pulse.beats_per_bar


def _jitter(rnd: random.Random, amount: float = 5.0) -> float:
    return rnd.uniform(-amount, amount)


# --- bass lines --------------------------------------------------------------------------------


def walking_bass(h: Harmony, dyn: Dynamics, rnd: random.Random) -> list[PartNote]:
    """A quarter note a beat: the root where a chord begins, then the chord's tones by the
    smallest steps, leaning towards the next root; a chromatic pickup on the swung "and" before
    some changes."""
    beats, chords = h.pulse.beats, h.chords
    lo, hi = BASS_RANGE
    out: list[PartNote] = []
    prev = 40.0
    for i, chord in enumerate(chords):
        if chord is None:
            continue
        t0, t1 = beats[i], beats[i + 1]
        beat = t1 - t0
        changes = i == 0 or chords[i - 1] != chord
        nxt = chords[i + 1] if i + 1 < len(chords) else None
        if changes:
            pitch = nearest(chord.root, prev, lo, hi)
        else:
            aim = nearest(nxt.root, prev, lo, hi) if nxt is not None and nxt != chord else prev
            tones = [p for p in range(lo, hi + 1) if p % 12 in chord.pitch_classes and p != round(prev)]
            # small steps, drifting towards where the line has to be next
            pitch = min(tones, key=lambda p: abs(p - prev) + 0.5 * abs(p - aim) + rnd.uniform(0, 3))
        pickup = nxt is not None and nxt != chord and rnd.random() < 0.4
        velocity = dyn.velocity(t0, 78 + (6 if downbeat(h, i) else 0), _jitter(rnd))
        out.append(PartNote(t0, t0 + beat * (0.6 if pickup else 0.92), pitch, velocity))
        if pickup:
            target = nearest(nxt.root, pitch, lo + 1, hi - 1)
            out.append(PartNote(t0 + beat * SWING, t0 + beat * 0.97, target + rnd.choice((-1, 1)), velocity - 10))
        prev = pitch
    return out


def root_fifth_bass(h: Harmony, dyn: Dynamics, rnd: random.Random) -> list[PartNote]:
    """Pop's electric bass, locked to the kick (`pop_kick_offsets`): the root on the downbeat and
    its pushes, the fifth in mid-bar, an octave pickup now and then."""
    beats, chords = h.pulse.beats, h.chords
    lo, hi = BASS_RANGE
    out: list[PartNote] = []
    prev = 36.0
    for i, chord in enumerate(chords):
        if chord is None:
            continue
        t0, beat = beats[i], beats[i + 1] - beats[i]
        pos = (i - h.pulse.first_downbeat) % h.pulse.beats_per_bar
        root = nearest(chord.root, prev, lo, hi - 7)
        if i == 0 or chords[i - 1] != chord or pos == 0:
            prev = root
        for offset, length in pop_kick_offsets(h.pulse.beats_per_bar, pos):
            on_beat = offset == 0.0
            if on_beat and pos == h.pulse.beats_per_bar // 2 and h.pulse.beats_per_bar == 4:
                pitch = nearest(fifth_of(chord), root + 4, root, root + 12)
            elif not on_beat and rnd.random() < 0.25:
                pitch = root + 12
            else:
                pitch = root
            start = t0 + offset * beat
            out.append(PartNote(start, start + length * beat * 0.9, pitch, dyn.velocity(start, 84, _jitter(rnd))))
    return out


def pop_kick_offsets(beats_per_bar: int, pos: int) -> tuple[tuple[float, float], ...]:
    """(offset in beats, length in beats) of the kick and bass hits within beat `pos` of a bar."""
    if beats_per_bar == 3:
        return ((0.0, 1.0),) if pos == 0 else ()
    return {0: ((0.0, 1.5),), 1: ((0.5, 0.5),), 2: ((0.0, 1.0),), 3: ((0.5, 0.5),)}[pos]


def held_roots(h: Harmony, dyn: Dynamics, rnd: random.Random) -> list[PartNote]:
    """Free time (no steady pulse): the root of each chord, held for as long as the chord lasts."""
    out: list[PartNote] = []
    prev = 38.0
    for s in spans(h):
        pitch = nearest(s.chord.root, prev, *BASS_RANGE)
        out.append(PartNote(s.start, s.end - 0.02, pitch, dyn.velocity(s.start, 66, _jitter(rnd, 3))))
        prev = pitch
    return out


def doubled_bass_line(piano_low: list[PartNote], dyn: Dynamics) -> list[PartNote]:
    """Strings doubling the piano's lowest voice, legato, softer than the piano."""
    out: list[PartNote] = []
    for a, b in zip(piano_low, piano_low[1:] + [None]):
        end = max(a.end, b.start - 0.01) if b is not None and b.start - a.end < 0.5 else a.end
        out.append(PartNote(a.start, end, a.pitch, dyn.velocity(a.start, 56)))
    return out


# --- drums -------------------------------------------------------------------------------------


def swing_drums(h: Harmony, dyn: Dynamics, rnd: random.Random) -> list[PartNote]:
    """Brushes and ride: the ride on every beat with the swung skip note into 2 and 4, the hi-hat
    pedal on 2 and 4 (2 and 3 in a waltz), a feathered kick; the skip notes drop out when it's quiet."""
    beats, bpb = h.pulse.beats, h.pulse.beats_per_bar
    out: list[PartNote] = []
    for i in range(len(beats) - 1):
        if h.chords[i] is None and dyn.busy(beats[i]) == 0:
            continue
        t0, beat = beats[i], beats[i + 1] - beats[i]
        pos = (i - h.pulse.first_downbeat) % bpb
        out.append(PartNote(t0, t0 + 0.1, RIDE, dyn.velocity(t0, 62 + (6 if pos % 2 == 1 else 0), _jitter(rnd))))
        if pos % 2 == 0 and not dyn.quiet(t0) and bpb == 4:
            skip = t0 + beat * SWING
            out.append(PartNote(skip, skip + 0.08, RIDE, dyn.velocity(skip, 50, _jitter(rnd))))
        if (bpb == 4 and pos in (1, 3)) or (bpb == 3 and pos in (1, 2)):
            out.append(PartNote(t0, t0 + 0.08, PEDAL_HAT, dyn.velocity(t0, 58, _jitter(rnd, 3))))
        out.append(PartNote(t0, t0 + 0.1, KICK, dyn.velocity(t0, 30, _jitter(rnd, 3))))
    return out


def pop_drums(h: Harmony, dyn: Dynamics, rnd: random.Random) -> list[PartNote]:
    """A kit groove: kick with the bass, snare on the backbeat, closed hats on the eighths; a tom
    fill on the last beat of every eighth bar and a crash on the downbeat after it. Quiet
    passages get hats and a side stick only."""
    beats, bpb = h.pulse.beats, h.pulse.beats_per_bar
    out: list[PartNote] = []
    crash_next = True
    for i in range(len(beats) - 1):
        t0, beat = beats[i], beats[i + 1] - beats[i]
        if h.chords[i] is None and dyn.busy(t0) == 0:
            continue
        pos = (i - h.pulse.first_downbeat) % bpb
        quiet = dyn.quiet(t0)
        fill = pos == bpb - 1 and bar_of(h, i) % 8 == 7 and not quiet
        if pos == 0 and crash_next:
            out.append(PartNote(t0, t0 + 0.5, CRASH, dyn.velocity(t0, 84, _jitter(rnd))))
            crash_next = False
        if fill:
            for k, tom in enumerate(TOMS):
                t = t0 + k * beat / 4
                out.append(PartNote(t, t + beat / 4, tom, dyn.velocity(t, 80 + 2 * k, _jitter(rnd))))
            crash_next = True
            continue
        for offset, _ in pop_kick_offsets(bpb, pos):
            if not quiet or (offset == 0.0 and pos == 0):
                t = t0 + offset * beat
                out.append(PartNote(t, t + 0.1, KICK, dyn.velocity(t, 88, _jitter(rnd))))
        if (bpb == 4 and pos in (1, 3)) or (bpb == 3 and pos in (1, 2)):
            out.append(PartNote(t0, t0 + 0.1, SIDE_STICK if quiet else SNARE, dyn.velocity(t0, 80, _jitter(rnd))))
        for half in (0.0, 0.5):
            t = t0 + half * beat
            hat = OPEN_HAT if half and pos == bpb - 1 and bar_of(h, i) % 4 == 3 else CLOSED_HAT
            out.append(PartNote(t, t + beat * 0.4, hat, dyn.velocity(t, 64 if half == 0 else 52, _jitter(rnd))))
    return out


# --- pads --------------------------------------------------------------------------------------


def pad_voicing(chord: ChordLabel, prev: tuple[int, ...]) -> tuple[int, ...]:
    """An open voicing in the pad's register: the root low, then two of the chord's other tones
    spread above it, each as close as it can be to the previous voicing."""
    lo, hi = PAD_RANGE
    root = nearest(chord.root, prev[0] if prev else 50, lo, lo + 11)
    # three voices: the root and the two tones that say most (third and seventh, else the fifth);
    # a pad's sustained voices are what a band render spends its synthesis time on
    intervals = sorted(QUALITIES[chord.quality][1:], key=lambda i: COLOUR_ORDER.index(i))[:2]
    others = sorted((chord.root + i) % 12 for i in intervals)
    centre = (sum(prev[1:]) / len(prev[1:])) if len(prev) > 1 else root + 12
    upper = sorted({nearest(pc, centre + (k - len(others) / 2) * 4, root + 5, hi) for k, pc in enumerate(others)})
    return (root, *upper)


def pad(
    h: Harmony, dyn: Dynamics, rnd: random.Random, base: int = 56, pedal: int | None = None
) -> tuple[list[PartNote], list[tuple[float, int]]]:
    """Chord tones held for each chord's whole length, with a slow swell (expression) into each;
    tones common to two chords sound on through the change. Where a drone sounds the chord's
    root (pitch class `pedal`), the pad leaves the root to it."""
    notes: list[PartNote] = []
    swells: list[tuple[float, int]] = []
    prev: tuple[int, ...] = ()
    held: dict[int, int] = {}  # pitch -> index in notes of the note sounding it up to now
    for s in spans(h):
        voicing = pad_voicing(s.chord, prev)
        velocity = dyn.velocity(s.start, base, _jitter(rnd, 3))
        sounding: dict[int, int] = {}
        # with fewer than two tones above the root (a power chord), the pad keeps the root too
        for p in voicing[1:] if s.chord.root == pedal and len(voicing) > 2 else voicing:
            i = held.get(p)
            if i is not None and abs(notes[i].end - s.start) < 1e-9:
                # a common tone is held through the change, as a player would, not struck again
                notes[i] = PartNote(notes[i].start, s.end, p, notes[i].velocity)
                sounding[p] = i
            else:
                sounding[p] = len(notes)
                notes.append(PartNote(s.start, s.end, p, velocity))
        held = sounding
        rise = min(2.0, (s.end - s.start) / 2)
        swells += [(s.start, 50), (s.start + rise / 2, 85), (s.start + rise, 110)]
        prev = voicing
    return notes, swells


def home_note(h: Harmony) -> int | None:
    """The piece's home pitch class: the chord root heard longest."""
    weights: dict[int, float] = {}
    for s in spans(h):
        weights[s.chord.root] = weights.get(s.chord.root, 0.0) + s.end - s.start
    return max(weights, key=lambda pc: (weights[pc], -pc)) if weights else None


def drone(h: Harmony, dyn: Dynamics, piece_end: float) -> list[PartNote]:
    """The piece's home note, low and soft, re-struck every 16 s."""
    home = home_note(h)
    if home is None:
        return []
    pitch = nearest(home, 36, *DRONE_RANGE)
    start = h.pulse.beats[0]
    out = []
    while start < piece_end - 0.5:
        end = min(start + 16.0, piece_end)
        out.append(PartNote(start, end, pitch, dyn.velocity(start, 44)))
        start = end
    return out


# --- the styles --------------------------------------------------------------------------------

Style = Callable[[Harmony, Dynamics, random.Random, list[PartNote], float], list[Part]]


def free_time(h: Harmony, dyn: Dynamics, rnd: random.Random, bass: int, pad_program: int) -> list[Part]:
    """A piece without a steady pulse (rubato, or a composer that keeps none): no drums to fight
    it; a bowed or held bass on each chord's root and a soft pad of its tones, changing with the
    harmony."""
    notes, swells = pad(h, dyn, rnd, base=46)
    return [
        Part("Bass", bass, tuple(held_roots(h, dyn, rnd)), Mix(volume=90, pan=58, reverb=60)),
        Part("Pad", pad_program, tuple(notes), Mix(volume=70, pan=72, reverb=90, chorus=30), expression=tuple(swells)),
    ]


def jazz(h: Harmony, dyn: Dynamics, rnd: random.Random, piano_low: list[PartNote], end: float) -> list[Part]:
    if not h.pulse.steady:
        return free_time(h, dyn, rnd, CONTRABASS, STRINGS)
    return [
        Part("Bass", ACOUSTIC_BASS, tuple(walking_bass(h, dyn, rnd)), Mix(volume=100, pan=58, reverb=35)),
        Part("Drums", BRUSH_KIT, tuple(swing_drums(h, dyn, rnd)), Mix(volume=80, pan=70, reverb=45), is_drum=True),
    ]


def pop(h: Harmony, dyn: Dynamics, rnd: random.Random, piano_low: list[PartNote], end: float) -> list[Part]:
    if not h.pulse.steady:
        return free_time(h, dyn, rnd, FINGERED_BASS, WARM_PAD)
    return [
        Part("Bass", FINGERED_BASS, tuple(root_fifth_bass(h, dyn, rnd)), Mix(volume=100, pan=64, reverb=25)),
        Part("Drums", STANDARD_KIT, tuple(pop_drums(h, dyn, rnd)), Mix(volume=88, pan=64, reverb=35), is_drum=True),
    ]


def ambient(h: Harmony, dyn: Dynamics, rnd: random.Random, piano_low: list[PartNote], end: float) -> list[Part]:
    notes, swells = pad(h, dyn, rnd, pedal=home_note(h))
    return [
        # Halo Pad sounds two samples a note where Warm Pad sounds four, the drone is bowed
        # contrabass rather than a third pad, and the pad leaves the home root to the drone:
        # sustained voices are what a band render pays for (issue 22's 1.5x budget; the
        # measurements are in bench/RESULTS.md)
        Part("Pad", HALO_PAD, tuple(notes), Mix(volume=78, pan=64, reverb=110, chorus=70), expression=tuple(swells)),
        Part("Drone", CONTRABASS, tuple(drone(h, dyn, end)), Mix(volume=70, pan=64, reverb=110, chorus=40)),
    ]


def classic(h: Harmony, dyn: Dynamics, rnd: random.Random, piano_low: list[PartNote], end: float) -> list[Part]:
    return [Part("Strings", STRINGS, tuple(doubled_bass_line(piano_low, dyn)), Mix(volume=72, pan=52, reverb=70))]


STYLES: dict[str, Style] = {"classic": classic, "jazz": jazz, "calm": ambient, "pop": pop}
# How loud the reverb is on the piano itself in each style: ambient's long tail, the others drier.
PIANO_REVERB = {"classic": 50, "jazz": 30, "calm": 100, "pop": 25}
