"""The pulse and the harmony of a piano piece, read from its notes: what band mode arranges around.

`find_pulse` finds the beat (tempo, phase, bars of three or four) from where notes start;
`recognise_chords` names the chord of each stretch of time from the pitch classes sounding in it;
`analyse` does both, a chord per beat. Pure, deterministic numpy on the 10 ms grid of
`generator.tokenizer`. The constants were chosen by measurement on realised lead sheets
(`training.harmony_eval`, `bench/harmony.py`).

Pulse. An onset-strength envelope (velocity-weighted onsets, low notes counted double, since a bass
line or a left hand marks the beat) is autocorrelated. Its peaks in 50–250 bpm are scored by the comb
of their multiples times a log-normal prior round 120 bpm; a peak at a half or a third of the winner's
lag takes over when its comb is nearly as strong and, where there is a bass line, the bass repeats at
it too (a walking bass does at 240 bpm, a bossa's never does at the eighth). The period is refined
below a tick by folding the onsets over nearby periods and a least-squares line through them; then
each beat is pulled towards the onsets near where it is expected, which follows a drifting tempo. The
bar (three or four) and its first downbeat are where chords change and strong onsets fall. A piece
whose onsets neither repeat at the beat, stretch by stretch, nor land on its beats has no pulse: it
gets slow, even breaths for pads.

Chords. Each segment's pitch-class profile (time sounding inside it × velocity) is scored against the
QUALITIES on all twelve roots: chord tones count for, tensions (9ths, 11ths, 13ths) are neutral, other
tones count against, a missing third counts against, the bass on the root counts for, and richer
chords pay a little. A Viterbi pass keeps a chord until another's evidence outweighs a switch penalty,
which is lower on bar lines and half bars, where a chord is struck anew with other pitch classes and
where the bass takes up the new root, and higher where the bass sits on the old chord's third, fifth
or seventh or the same chord is struck again.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..tokenizer import Note
from ..vocab import TICK_SECONDS

QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dom7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "hdim": (0, 3, 6, 10),
    "dim": (0, 3, 6, 9),  # the diminished seventh: a bare diminished triad reads as it too
    "sus": (0, 5, 7),  # sus4; sus2 is its own quality
    "sus2": (0, 2, 7),
    "power": (0, 7),
}
_SUFFIXES = {
    "maj": "",
    "min": "m",
    "dom7": "7",
    "maj7": "maj7",
    "min7": "m7",
    "hdim": "ø",
    "dim": "°7",
    "sus": "sus4",
    "sus2": "sus2",
    "power": "5",
}
NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class ChordLabel:
    """A chord as band mode needs it: a root and one of QUALITIES (extensions and inversions folded in)."""

    root: int  # pitch class 0..11
    quality: str  # a key of QUALITIES

    @property
    def pitch_classes(self) -> frozenset[int]:
        return frozenset((self.root + i) % 12 for i in QUALITIES[self.quality])

    def name(self) -> str:
        return NOTE_NAMES[self.root] + _SUFFIXES[self.quality]


@dataclass(frozen=True)
class Pulse:
    """Where the beats fall. Beats follow a drifting tempo, so they need not be evenly spaced."""

    beats: tuple[float, ...]  # seconds of every beat, from at or before the first note (a pickup's may be < 0)
    # to at or after the last note's end
    beats_per_bar: int  # 3 or 4
    first_downbeat: int  # index into beats of the first bar line
    bpm: float  # from the median beat; without a pulse, breaths a minute
    steady: bool  # False: no clear pulse; beats are then slow, even breaths for pads, not for drums


@dataclass(frozen=True)
class Harmony:
    """A piece's pulse and the chord of each of its beats."""

    pulse: Pulse
    chords: tuple[ChordLabel | None, ...]  # one per beat interval beats[i]..beats[i+1]; None: no chord

    def chord_at(self, seconds: float) -> ChordLabel | None:
        i = bisect_right(self.pulse.beats, seconds) - 1
        return self.chords[i] if 0 <= i < len(self.chords) else None


# ----------------------------------------------------------------------------------------------- pulse

MIN_BPM, MAX_BPM = 50.0, 250.0
PRIOR_BPM = 120.0  # the log-normal tempo prior's centre …
PRIOR_OCTAVES = 1.0  # … and its width, in octaves
COMB_MULTIPLES = 4  # a beat's comb: the autocorrelation at 1, 2, 3 and 4 beats
FASTER_LEVEL = 0.7  # a pulse twice or three times as fast is the beat when its comb is this strong …
BASS_PULSE = 0.3  # … and the low notes' onsets repeat at it this strongly (where there is a bass line)
MIN_BASS_ONSETS = 16  # fewer low onsets than this are no bass line
BASS_SPLIT = 55  # below this pitch a note is low: its onset marks the beat …
BASS_BOOST = 1.0  # … this much more than another's
STEADY_COMB = 0.2  # the mean autocorrelation at 1–4 beats (of lag 0's) a steady pulse reaches …
WINDOW_SECONDS = 16.0  # … in stretches this long
STEADY_ON_GRID = 0.5  # … and the share of onset strength within GRID_TOLERANCE of a beat or half beat
GRID_TOLERANCE = 0.08  # of a beat
TRACK_WINDOW = 0.12  # of a beat: onsets this near where a beat is expected move it …
TRACK_PHASE = 0.5  # … this share of the way to them …
TRACK_TEMPO = 0.1  # … and the tempo by this share of the error …
MAX_DRIFT = 0.2  # … within this share of the tempo found for the whole piece
BREATH_SECONDS = 2.0  # a pulseless piece's pads change at most this often
METER_STRENGTH = 0.5  # a bar line is where the chord changes, and less so where onsets are strong …
METER_FOUR_BIAS = 0.05  # … and, all else equal, there are four beats to the bar


def find_pulse(notes: Sequence[Note]) -> Pulse:
    """The beat of `notes`: every beat in seconds, the bar, the tempo, and whether there is a pulse at all."""
    if not notes:
        return Pulse((0.0,), 4, 0, 60.0 / BREATH_SECONDS, False)
    onsets, weights = _onsets(notes)
    first, last = min(n.start for n in notes), max(n.end for n in notes)
    envelope = _envelope(onsets, weights, last + 1)
    acf = _autocorrelation(envelope)
    low = np.array([n.pitch < BASS_SPLIT for n in notes])
    bass_acf = None
    if np.count_nonzero(low) >= MIN_BASS_ONSETS:
        bass_acf = _autocorrelation(_envelope(onsets[low], weights[low], last + 1))
    lag = _beat_lag(acf, bass_acf)
    period, phase = _refine(onsets, weights, lag)
    beats = _track(onsets, weights, period, phase, first, last)
    if _local_comb(envelope, lag) < STEADY_COMB or _on_grid(onsets, weights, beats) < STEADY_ON_GRID:
        breath = BREATH_SECONDS / TICK_SECONDS
        beats = _grid(breath, float(first), first, last)
        return Pulse(tuple(float(b) * TICK_SECONDS for b in beats), 4, 0, 60.0 / BREATH_SECONDS, False)
    period = float(np.median(np.diff(beats)))
    beats_per_bar, downbeat = _meter(_segment_profiles(notes, beats)[0], onsets, weights, beats)
    return Pulse(
        beats=tuple(float(b) * TICK_SECONDS for b in beats),
        beats_per_bar=beats_per_bar,
        first_downbeat=downbeat,
        bpm=60.0 / (period * TICK_SECONDS),
        steady=True,
    )


def _onsets(notes: Sequence[Note]) -> tuple[np.ndarray, np.ndarray]:
    """Onset ticks and their strength: velocity, low notes counted more."""
    onsets = np.array([n.start for n in notes], dtype=np.int64)
    velocity = np.array([n.velocity for n in notes], dtype=float) / 127.0
    low = np.array([n.pitch < BASS_SPLIT for n in notes], dtype=float)
    return onsets, velocity * (1.0 + BASS_BOOST * low)


def _envelope(onsets: np.ndarray, weights: np.ndarray, length: int) -> np.ndarray:
    # A chord's many notes should not outweigh the beat they fall on, hence the log; the small blur
    # lets humanised onsets a tick or two apart still line up.
    env = np.log1p(np.bincount(onsets, weights, minlength=length))
    return np.convolve(env, np.array([0.25, 0.5, 1.0, 0.5, 0.25]), mode="same")


def _autocorrelation(envelope: np.ndarray) -> np.ndarray:
    n = len(envelope)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(envelope - envelope.mean(), size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
    return acf / acf[0] if acf[0] > 0 else acf


def _lags() -> tuple[int, int]:
    return math.floor(60.0 / MAX_BPM / TICK_SECONDS), math.ceil(60.0 / MIN_BPM / TICK_SECONDS)


def _beat_lag(acf: np.ndarray, bass_acf: np.ndarray | None) -> int:
    """The lag (ticks) of the beat.

    Every peak of the autocorrelation in the tempo range is a candidate, scored by the comb of its
    multiples (a true beat repeats at two, three, four beats too; a swung eighth does not) times the
    tempo prior. The best may be a half note or a bar: a peak at a half or a third of its lag whose comb
    is nearly as strong is the beat instead. Where there is a bass line it decides: a walking bass
    repeats at the beat, a bossa's or a two-feel's never at the eighth (`bass_acf`: the autocorrelation
    of the low notes' onsets, None where there are too few of them).
    """
    lo, hi = _lags()
    hi = min(hi, len(acf) - 2)
    if hi <= lo:
        return lo
    lags = np.arange(lo, hi + 1)
    peaks = lags[(acf[lags] >= acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] > 0)]
    if len(peaks) == 0:
        return int(lags[np.argmax(acf[lags])])
    comb = np.array([_comb(acf, lag) for lag in peaks])
    bpm = 60.0 / (peaks * TICK_SECONDS)
    prior = np.exp(-0.5 * (np.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    score = comb * prior
    best = int(np.argmax(score))
    while True:
        faster = [
            k
            for k, lag in enumerate(peaks)
            if any(abs(lag * d - peaks[best]) <= 1 + 0.02 * peaks[best] for d in (2, 3))
        ]
        if bass_acf is None:
            faster = [k for k in faster if score[k] >= FASTER_LEVEL * score[best]]
        else:
            faster = [
                k
                for k in faster
                if comb[k] >= FASTER_LEVEL * comb[best] and bass_acf[peaks[k] - 1 : peaks[k] + 2].max() >= BASS_PULSE
            ]
        if not faster:
            return int(peaks[best])
        best = max(faster, key=lambda k: score[k])


def _comb(acf: np.ndarray, lag: int) -> float:
    """Mean autocorrelation at the first few multiples of `lag` (each the best within a tick)."""
    values = [
        acf[max(k * lag - 1, 0) : k * lag + 2].max() for k in range(1, COMB_MULTIPLES + 1) if k * lag + 1 < len(acf)
    ]
    return float(np.mean(values)) if values else 0.0


def _local_comb(envelope: np.ndarray, lag: int) -> float:
    """How strongly the onsets repeat at the beat, stretch by stretch: the median comb over windows of
    WINDOW_SECONDS, each at its own best lag near `lag`, so that a tempo that drifts still counts."""
    window = round(WINDOW_SECONDS / TICK_SECONDS)
    if len(envelope) < 1.5 * window:
        return _comb(_autocorrelation(envelope), lag)
    spread = max(1, round(0.08 * lag))
    combs = []
    for start in range(0, len(envelope) - window // 2, window // 2):
        acf = _autocorrelation(envelope[start : start + window])
        combs.append(max(_comb(acf, near) for near in range(lag - spread, lag + spread + 1)))
    return float(np.median(combs))


def _refine(onsets: np.ndarray, weights: np.ndarray, lag: int) -> tuple[float, float]:
    """(period, phase) in ticks: the period near `lag` on whose grid the onsets pile up most.

    Coarse to fine, since a period off by a hundredth of a tick drifts a beat off the onsets over
    a few minutes; then a weighted least-squares line through the onsets near each beat.
    """
    period, phase = _best_fold(onsets, weights, np.arange(lag - 1.5, lag + 1.5 + 1e-9, 0.05))
    period, phase = _best_fold(onsets, weights, np.arange(period - 0.05, period + 0.05 + 1e-9, 0.0025))
    for _ in range(2):
        beat = np.round((onsets - phase) / period)
        near = np.abs(onsets - phase - beat * period) <= GRID_TOLERANCE * period
        if np.count_nonzero(near) < 4 or np.ptp(beat[near]) < 2:
            break
        slope, intercept = np.polyfit(beat[near], onsets[near], 1, w=np.sqrt(weights[near]))
        period, phase = float(slope), float(intercept) % float(slope)
    return period, phase


def _best_fold(onsets: np.ndarray, weights: np.ndarray, periods: np.ndarray) -> tuple[float, float]:
    """Of `periods`, the one whose phase gathers the most onset strength (folding the onsets into one
    period, in bins of about a tick, blurred by two ticks for humanising), and that phase."""
    bins = max(round(float(periods.mean())), 1)
    position = np.floor(onsets[None, :] % periods[:, None] / periods[:, None] * bins).astype(np.int64) % bins
    flat = (np.arange(len(periods))[:, None] * bins + position).ravel()
    hist = np.bincount(flat, np.tile(weights, len(periods)), minlength=len(periods) * bins)
    hist = hist.reshape(len(periods), bins)
    blurred = sum(np.roll(hist, k, axis=1) * w for k, w in ((-2, 0.25), (-1, 0.5), (0, 1.0), (1, 0.5), (2, 0.25)))
    row, top = np.unravel_index(int(np.argmax(blurred)), blurred.shape)
    period = float(periods[row])
    return period, (top + 0.5) * period / bins


def _track(onsets: np.ndarray, weights: np.ndarray, period: float, phase: float, first: int, last: int) -> np.ndarray:
    """Beats (ticks) from at or before `first` to at or after `last`, each moved towards the onsets near
    where it is expected, so that a tempo that drifts is followed.

    Over a drifting piece the phase found for the whole of it (`phase`) may fit its start badly, and
    the first eight beats alone may hold a pickup: the tracking from either start that keeps more
    onsets on its beats wins.
    """
    order = np.argsort(onsets, kind="stable")
    onsets, weights = onsets[order].astype(float), weights[order]
    starts = [phase]
    opening = onsets < first + 8 * period
    if np.count_nonzero(opening) >= 4:
        starts.append(_best_fold(onsets[opening], weights[opening], np.array([period]))[1])
    tracked = [_follow(onsets, weights, period, float(_grid(period, p, first, first + 1)[0]), last) for p in starts]
    return max(tracked, key=lambda beats: _on_grid(onsets, weights, beats))


def _follow(onsets: np.ndarray, weights: np.ndarray, period: float, beat: float, last: int) -> np.ndarray:
    """Beats from `beat` on, each pulled towards the (sorted) onsets near where it is expected; where
    none are near, the last tempo carries on."""
    beats = [beat]
    window = TRACK_WINDOW * period
    tempo = period
    while beat < last - 1e-9 or len(beats) < 2:
        expected = beat + tempo
        lo, hi = np.searchsorted(onsets, [expected - window, expected + window])
        if hi > lo:
            deviation = onsets[lo:hi] - expected
            pull = weights[lo:hi] * np.exp(-0.5 * (2.0 * deviation / window) ** 2)
            error = float(pull @ deviation / pull.sum())
            beat = expected + TRACK_PHASE * error
            tempo = min(max(tempo + TRACK_TEMPO * error, (1 - MAX_DRIFT) * period), (1 + MAX_DRIFT) * period)
        else:
            beat = expected
        beats.append(beat)
    return np.array(beats)


def _on_grid(onsets: np.ndarray, weights: np.ndarray, beats: np.ndarray) -> float:
    """The share of onset strength within GRID_TOLERANCE of a beat or half beat (a beat found at half
    the tempo still holds a pulse)."""
    k = np.clip(np.searchsorted(beats, onsets, side="right") - 1, 0, len(beats) - 2)
    position = (onsets - beats[k]) / (beats[k + 1] - beats[k]) % 0.5
    near = np.minimum(position, 0.5 - position) <= GRID_TOLERANCE
    return float(weights[near].sum() / max(weights.sum(), 1e-9))


def _grid(period: float, phase: float, first: int, last: int) -> np.ndarray:
    """Beats (ticks) every `period` through `phase`, from at or before `first` to at or after `last`."""
    k0 = math.floor((first - phase) / period + 1e-9)
    k1 = math.ceil((last - phase) / period - 1e-9)
    beats = phase + period * np.arange(k0, max(k1, k0 + 1) + 1)
    # A beat a hair after the first note (humanising) is taken to be on it, not a whole beat earlier.
    if len(beats) > 2 and beats[1] - first <= GRID_TOLERANCE * period:
        beats = beats[1:].copy()
        beats[0] = min(beats[0], first)
    return beats


def _meter(pcs: np.ndarray, onsets: np.ndarray, weights: np.ndarray, beats: np.ndarray) -> tuple[int, int]:
    """(beats per bar, index of the first downbeat): the bar that puts the most chord changes and strong
    (low) onsets on its first beats. `pcs` is each beat's pitch-class profile."""
    n = len(pcs)
    if n < 6:
        return 4, 0
    unit = pcs / np.maximum(np.linalg.norm(pcs, axis=1, keepdims=True), 1e-9)
    change = np.zeros(n)
    change[1:] = 1.0 - np.sum(unit[1:] * unit[:-1], axis=1)
    nearest = np.clip(np.searchsorted(beats, onsets), 1, len(beats) - 1)
    nearest -= onsets - beats[nearest - 1] < beats[nearest] - onsets
    on_beat = np.abs(onsets - beats[nearest]) <= GRID_TOLERANCE * np.median(np.diff(beats))
    strength = np.bincount(np.minimum(nearest[on_beat], n - 1), weights[on_beat], minlength=n)[:n]
    feature = _standardise(change) + METER_STRENGTH * _standardise(strength)
    best = (-math.inf, 4, 0)
    for beats_per_bar in (4, 3):
        for downbeat in range(beats_per_bar):
            contrast = feature[downbeat::beats_per_bar].mean() - feature.mean()
            contrast += METER_FOUR_BIAS if beats_per_bar == 4 else 0.0
            if contrast > best[0]:
                best = (contrast, beats_per_bar, downbeat)
    return best[1], best[2]


def _standardise(x: np.ndarray) -> np.ndarray:
    spread = x.std()
    return (x - x.mean()) / spread if spread > 1e-9 else np.zeros_like(x)


# ---------------------------------------------------------------------------------------------- chords

# Tones a chord may carry without counting against it (semitones above the root): the 9ths, 11ths and
# 13ths of jazz voicings and a triad's added sixth. Rootless voicings make a C7 (E G Bb D) look like Eø;
# were its 9th counted against it, the Eø would win on every beat the bass leaves C.
TENSIONS: dict[str, tuple[int, ...]] = {
    "maj": (2, 9, 11),  # a sixth chord's line passes through the major seventh
    "min": (2, 5, 9, 11),
    "dom7": (1, 2, 3, 6, 8, 9),
    "maj7": (2, 6, 9),
    "min7": (2, 5, 9),
    "hdim": (1, 2, 5, 8),
    "dim": (2, 5, 8, 11),
    "sus": (2, 9, 10),
    "sus2": (5, 9, 10),
    "power": (),
}
COMPLEXITY = {  # what a chord costs before it explains anything: a tie goes to the plainer one
    "maj": 0.0,
    "min": 0.005,
    "sus": 0.02,
    "sus2": 0.12,  # C D G is also G C D, and a sixth chord's C D G A: sus2 only when nothing else fits
    "power": 0.03,
    "dom7": 0.09,  # a seventh must be heard, not merely passed through by the line
    "maj7": 0.095,
    "min7": 0.095,
    "hdim": 0.1,
    "dim": 0.105,
}
OUTSIDE_PENALTY = 0.6  # per unit of profile outside chord tones and tensions, against 1 inside
MISSING_THIRD = 0.2  # the third (the sus tone, a power chord's fifth) is absent …
MISSING_LEVEL = 0.05  # … below this share of the profile
BASS_BONUS = 0.15  # the bass sounding the root, for the whole segment
LOUDNESS_CAP = 2.0  # a segment's evidence grows with how much sounds in it, up to this many typical ones
SWITCH_PENALTY = 3.0  # a chord change must gain this much over staying …
BAR_SWITCH = 0.3  # … times this on a bar line …
HALF_BAR_SWITCH = 0.5  # … or this halfway through a bar of four
ENTER_BONUS = 1.0  # a new chord whose root is in the bass as it starts …
LEAVE_PENALTY = 0.25  # … unless the bass is on a third, fifth or seventh of the chord sounding till then
STRIKE_NOTES, STRIKE_TICKS, STRIKE_LOWEST = 3, 4, 48  # a chord struck: this many notes within this many
# ticks, none below this pitch (the bass's) …
NEW_STRIKE = 0.35  # … with new pitch classes makes a change cost this share of SWITCH_PENALTY …
SAME_STRIKE = 1.5  # … with the same ones this share
SILENCE = 0.15  # a segment sounding less than this share of a velocity-64 note is silent

_LABELS = tuple(ChordLabel(root, q) for q in QUALITIES for root in range(12))


def recognise_chords(
    notes: Sequence[Note], bounds: Sequence[float], *, beats_per_bar: int | None = None, first_downbeat: int = 0
) -> tuple[ChordLabel | None, ...]:
    """The chord of each [bounds[i], bounds[i+1]) (seconds); None where (nearly) nothing sounds.

    With `beats_per_bar` the bounds are beats and chords change more readily on bar lines (the first at
    bounds[first_downbeat]) and half bars; without it every bound is taken for a bar line.
    """
    if len(bounds) < 2:
        return ()
    ticks = np.asarray(bounds, dtype=float) / TICK_SECONDS
    pcs, bass, energy = _segment_profiles(notes, ticks)
    silent = energy < SILENCE * 64.0 * np.diff(ticks)
    scores = _chord_scores(pcs, bass) * _loudness(energy, silent)[:, None]
    enter = ENTER_BONUS * bass[:, _template_roots()]
    leave = LEAVE_PENALTY * bass @ _upper_tones().T
    switch = _switch_penalties(len(pcs), beats_per_bar, first_downbeat) * _strike_factors(notes, ticks)
    path = _viterbi(scores, enter, leave, switch, silent)
    return tuple(None if k < 0 else _LABELS[k] for k in path)


def _segment_profiles(notes: Sequence[Note], ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment between `ticks`: pitch-class weight (ticks sounding × velocity), the share of the
    segment each pitch class is the lowest sounding, and the total weight."""
    n_seg = len(ticks) - 1
    if not notes or n_seg < 1:
        return np.zeros((max(n_seg, 0), 12)), np.zeros((max(n_seg, 0), 12)), np.zeros(max(n_seg, 0))
    starts = np.array([n.start for n in notes], dtype=float)
    ends = np.array([n.end for n in notes], dtype=float)
    pitch_class = np.array([n.pitch % 12 for n in notes])
    velocity = np.array([n.velocity for n in notes], dtype=float)
    # How much of each note has sounded by each segment edge, × velocity: segment totals are differences.
    sounded = np.clip(ticks[None, :] - starts[:, None], 0.0, (ends - starts)[:, None]) * velocity[:, None]
    order = np.argsort(pitch_class, kind="stable")
    present, first = np.unique(pitch_class[order], return_index=True)
    by_class = np.zeros((12, len(ticks)))
    by_class[present] = np.add.reduceat(sounded[order], first, axis=0)  # no BLAS: it threads badly when busy
    profile = np.diff(by_class, axis=1).T

    length = int(max(ends.max(), math.ceil(ticks[-1])))
    lowest = np.full(length, -1, dtype=np.int64)
    for n in sorted(notes, key=lambda n: -n.pitch):  # lower notes paint over higher ones
        lowest[n.start : n.end] = n.pitch
    tick = np.arange(length)
    segment = np.searchsorted(ticks, tick + 0.5, side="right") - 1
    heard = (lowest >= 0) & (segment >= 0) & (segment < n_seg)
    bass = np.bincount(segment[heard] * 12 + lowest[heard] % 12, minlength=n_seg * 12).reshape(n_seg, 12)
    span = np.maximum(np.diff(ticks), 1.0)[:, None]
    return profile, bass / span, profile.sum(axis=1)


@lru_cache(maxsize=1)
def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels × 12 weights of each pitch class, labels × 12 indicator of the third, labels' complexity)."""
    weights = np.zeros((len(_LABELS), 12))
    third = np.zeros((len(_LABELS), 12))
    for k, label in enumerate(_LABELS):
        relative = np.full(12, -OUTSIDE_PENALTY)
        relative[list(TENSIONS[label.quality])] = 0.0
        relative[list(QUALITIES[label.quality])] = 1.0
        weights[k] = np.roll(relative, label.root)
        third[k, (label.root + QUALITIES[label.quality][1]) % 12] = 1.0
    cost = np.array([COMPLEXITY[label.quality] for label in _LABELS])
    return weights, third, cost


@lru_cache(maxsize=1)
def _upper_tones() -> np.ndarray:
    """labels × 12: the chord's tones other than its root (a walking bass's notes within the chord)."""
    tones = np.zeros((len(_LABELS), 12))
    for k, label in enumerate(_LABELS):
        tones[k, [(label.root + i) % 12 for i in QUALITIES[label.quality][1:]]] = 1.0
    return tones


@lru_cache(maxsize=1)
def _template_roots() -> np.ndarray:
    return np.array([label.root for label in _LABELS])


def _chord_scores(pcs: np.ndarray, bass: np.ndarray) -> np.ndarray:
    """segments × labels: how well each chord explains each segment's share of pitch classes."""
    weights, third, cost = _templates()
    share = pcs / np.maximum(pcs.sum(axis=1, keepdims=True), 1e-9)
    missing = (share < MISSING_LEVEL).astype(float) @ third.T
    return share @ weights.T - MISSING_THIRD * missing + BASS_BONUS * bass[:, _template_roots()] - cost


def _loudness(energy: np.ndarray, silent: np.ndarray) -> np.ndarray:
    """How much a segment's evidence counts: a lone passing note less than a full voicing."""
    typical = float(np.median(energy[~silent])) if np.any(~silent) else 1.0
    return np.minimum(energy / max(typical, 1e-9), LOUDNESS_CAP)


def _strike_factors(notes: Sequence[Note], ticks: np.ndarray) -> np.ndarray:
    """Per segment, what its start does to the cost of a chord change: a chord struck there (or half a
    segment before, anticipating it) with other pitch classes than the chord struck before makes a
    change cheap, the same chord struck again makes it dear, no chord struck leaves it be.

    A chord struck is STRIKE_NOTES or more notes from STRIKE_LOWEST up starting within STRIKE_TICKS.
    """
    factors = np.ones(max(len(ticks) - 1, 0))
    high = sorted((n.start, n.pitch % 12) for n in notes if n.pitch >= STRIKE_LOWEST)
    strikes: list[tuple[int, frozenset[int]]] = []
    i = 0
    while i < len(high):
        j = i
        while j < len(high) and high[j][0] - high[i][0] <= STRIKE_TICKS:
            j += 1
        if j - i >= STRIKE_NOTES:
            strikes.append((high[i][0], frozenset(pc for _, pc in high[i:j])))
        i = j
    if not strikes:
        return factors
    times = np.array([t for t, _ in strikes], dtype=float)
    for k in range(1, len(factors)):
        length = ticks[k + 1] - ticks[k]
        lo, hi = np.searchsorted(times, [ticks[k] - 0.6 * length, ticks[k] + 0.3 * length])
        if hi == lo:
            continue
        if lo == 0:
            factors[k] = NEW_STRIKE
            continue
        now, before = strikes[hi - 1][1], strikes[lo - 1][1]
        novelty = 1.0 - len(now & before) / len(now | before)
        factors[k] = SAME_STRIKE + (NEW_STRIKE - SAME_STRIKE) * novelty
    return factors


def _switch_penalties(n: int, beats_per_bar: int | None, first_downbeat: int) -> np.ndarray:
    """What a chord change costs at the start of each segment."""
    if beats_per_bar is None:
        return np.full(n, SWITCH_PENALTY * BAR_SWITCH)
    position = (np.arange(n) - first_downbeat) % beats_per_bar
    penalty = np.full(n, SWITCH_PENALTY)
    penalty[position == 0] *= BAR_SWITCH
    if beats_per_bar == 4:
        penalty[position == 2] *= HALF_BAR_SWITCH
    return penalty


def _viterbi(
    scores: np.ndarray, enter: np.ndarray, leave: np.ndarray, switch: np.ndarray, silent: np.ndarray
) -> list[int]:
    """The label per segment maximising the scores, less `switch` per change, plus `enter` for the chord
    changed to, less `leave` for the chord changed from; -1 for silent segments. Silence breaks the
    chain: what follows starts afresh."""
    path = [-1] * len(scores)
    start = 0
    while start < len(scores):
        if silent[start]:
            start += 1
            continue
        stop = start
        while stop < len(scores) and not silent[stop]:
            stop += 1
        path[start:stop] = _viterbi_run(scores[start:stop], enter[start:stop], leave[start:stop], switch[start:stop])
        start = stop
    return path


def _viterbi_run(scores: np.ndarray, enter: np.ndarray, leave: np.ndarray, switch: np.ndarray) -> list[int]:
    total = scores[0] + enter[0]
    back = np.zeros(scores.shape, dtype=np.int64)
    states = np.arange(scores.shape[1])
    for i in range(1, len(scores)):
        best = int(np.argmax(total - leave[i]))
        moved = total[best] - leave[i, best] - switch[i] + enter[i]
        stay = total >= moved
        back[i] = np.where(stay, states, best)
        total = np.where(stay, total, moved) + scores[i]
    path = [int(np.argmax(total))]
    for i in range(len(scores) - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return path[::-1]


# ------------------------------------------------------------------------------------------------ both


def analyse(notes: Sequence[Note]) -> Harmony:
    """The pulse of `notes` and a chord per beat."""
    pulse = find_pulse(notes)
    if not pulse.steady:  # breaths are not bars
        return Harmony(pulse, recognise_chords(notes, pulse.beats))
    chords = recognise_chords(
        notes, pulse.beats, beats_per_bar=pulse.beats_per_bar, first_downbeat=pulse.first_downbeat
    )
    return Harmony(pulse, chords)
