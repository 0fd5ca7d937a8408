"""Band mode's analysis: the pulse and a chord per beat, heard from realised lead sheets and from made-up notes."""

import itertools
import random
import time
from pathlib import Path

import pytest
from test_jazz import sheet as jazz_chart  # a chart from (symbol, beats) pairs

from generator.arrange.analysis import (
    QUALITIES,
    ChordLabel,
    Harmony,
    analyse,
    find_pulse,
    recognise_chords,
)
from generator.tokenizer import Note
from training import chords as C
from training import leadsheets as L
from training.harmony_eval import held_out, label_of, realised_truth, score

ROOT = Path("/work/shared/corpus/jazz-leadsheets")


def sheet(bars: str, beats_per_bar: int = 4, feel: str = "swing", tempo: float | None = None) -> L.LeadSheet:
    """A chart from bars of chord symbols ("Dm7 G7 | Cmaj7"): the chords of a bar share it evenly."""
    changes = [(symbol, beats_per_bar / len(bar.split())) for bar in bars.split("|") for symbol in bar.split()]
    return jazz_chart(changes, feel, tempo, beats_per_bar)


PROGRESSIONS = [
    ("ii-V-I in C", sheet("Dm7 | G7 | Cmaj7 | Cmaj7 | Dm7 G7 | Cmaj7 | Dm7 G7 | C6")),
    ("ii-V-I in Bb", sheet("Cm7 F7 | Bbmaj7 | Cm7 F7 | Bbmaj7 Gm7 | Cm7 | F7 | Bbmaj7 | Bbmaj7")),
    ("ii-V-I in F#", sheet("G#m7 | C#7 | F#maj7 | F#maj7", tempo=180)),
    ("blues in F", sheet("F7 | Bb7 | F7 | F7 | Bb7 | Bb7 | F7 | D7 | Gm7 | C7 | F7 D7 | Gm7 C7")),
    ("rhythm changes A", sheet("Bbmaj7 G7 | Cm7 F7 | Dm7 G7 | Cm7 F7 | Bb7 | Ebmaj7 Edim7 | Dm7 G7 | Cm7 F7")),
    ("minor ii-V", sheet("Dm7b5 | G7b9 | Cm6 | Cm6 | Fm7 | Bb7 | Ebmaj7 | Ebmaj7")),
    ("minor ii-V in G", sheet("Cm7 | F7 | Bbmaj7 | Ebmaj7 | Am7b5 | D7 | Gm6 | Gm6")),
    ("waltz", sheet("Am7 | D7 | Gmaj7 | Cmaj7 | F#m7b5 | B7 | Em7 | Em7", beats_per_bar=3)),
    ("ballad", sheet("Cmaj7 | Am7 | Dm7 | G7 | Em7 | A7 | Dm7 | G7", feel="ballad")),
    ("bossa", sheet("Dm7 | G7 | Cmaj7 | Cmaj7 | Dm7 | Db7 | Cmaj7 | A7", feel="straight", tempo=130)),
    ("minor blues", sheet("Cm7 | Cm7 | Cm7 | Cm7 | Fm7 | Fm7 | Cm7 | Cm7 | Ab7 | G7 | Cm7 | G7")),
    ("modal", sheet("Dm7 | Dm7 | Dm7 | Dm7 | Ebm7 | Ebm7 | Dm7 | Dm7")),
]


def test_realised_progressions_are_heard_beat_by_beat():
    both = beats = 0
    for seed, (name, chart) in enumerate(PROGRESSIONS):
        notes, truth = realised_truth(chart, seed)
        s = score(analyse(notes), truth)
        assert s.tempo, f"{name}: tempo not found"
        assert s.meter, f"{name}: {truth.beats_per_bar} beats to the bar not found"
        both, beats = both + s.both, beats + s.beats
    assert both / beats >= 0.8


@pytest.mark.skipif(not ROOT.is_dir(), reason="the jazz lead-sheet corpus is not here")
def test_held_out_corpus_charts_are_heard_beat_by_beat():
    charts = list(L.iter_lead_sheets(ROOT, sources=("parkr",)))
    both = beats = tempo = 0
    for chart, seed in held_out(charts, 10):
        notes, truth = realised_truth(chart, seed)
        s = score(analyse(notes), truth)
        assert s.tempo_octave, chart.id
        both, beats, tempo = both + s.both, beats + s.beats, tempo + s.tempo
    assert tempo >= 9
    assert both / beats >= 0.8


# ------------------------------------------------------------------------------------------- made-up notes


def held(pitches, start=0.0, end=2.0, velocity=80) -> list[Note]:
    return [Note(round(start * 100), round(end * 100), p, velocity) for p in pitches]


@pytest.mark.parametrize("quality", sorted(QUALITIES))
def test_a_held_chord_is_named_by_its_template(quality):
    root = 2  # D, in the bass, so that a symmetric chord (dim) has one answer
    notes = held([36 + root, *(60 + root + i for i in QUALITIES[quality])])
    assert recognise_chords(notes, [0.0, 2.0]) == (ChordLabel(root, quality),)


def test_a_c_major_triad_and_a_c_minor_seventh():
    assert recognise_chords(held([60, 64, 67]), [0.0, 2.0]) == (ChordLabel(0, "maj"),)
    assert recognise_chords(held([48, 63, 67, 70]), [0.0, 2.0]) == (ChordLabel(0, "min7"),)
    harmony = analyse(held([48, 60, 64, 67]))
    assert set(harmony.chords) == {ChordLabel(0, "maj")}


def test_silence_is_no_chord():
    notes = held([48, 60, 64, 67], 0.0, 1.0) + held([50, 62, 65, 69], 3.0, 4.0)
    assert recognise_chords(notes, [0.0, 1.0, 2.0, 3.0, 4.0]) == (
        ChordLabel(0, "maj"),
        None,
        None,
        ChordLabel(2, "min"),
    )
    assert recognise_chords([], [0.0, 1.0]) == (None,)
    assert recognise_chords(notes, [1.0]) == ()


def test_nothing_to_analyse():
    harmony = analyse([])
    assert harmony.chords == ()
    assert not harmony.pulse.steady
    assert harmony.chord_at(0.5) is None


def test_names():
    names = [ChordLabel(0, "min7"), ChordLabel(6, "maj"), ChordLabel(11, "hdim"), ChordLabel(7, "dom7")]
    names += [ChordLabel(0, "power"), ChordLabel(2, "sus"), ChordLabel(3, "maj7"), ChordLabel(9, "dim")]
    assert [c.name() for c in names] == ["Cm7", "F#", "Bø", "G7", "C5", "Dsus4", "Ebmaj7", "A°7"]
    assert ChordLabel(7, "dom7").pitch_classes == {7, 11, 2, 5}


def waltz(bpm: float = 100.0, bars: int = 24) -> list[Note]:
    """Oom-pah-pah: a low root on one, the chord on two and three, a chord a bar round a cycle of fifths."""
    beat = 60.0 / bpm
    notes = []
    for bar in range(bars):
        root = (bar * 5) % 12
        t = bar * 3 * beat
        notes += held([36 + root], t, t + beat * 0.9, velocity=90)
        for k in (1, 2):
            notes += held([60 + root, 64 + root, 67 + root], t + k * beat, t + (k + 0.8) * beat, velocity=60)
    return sorted(notes)


def test_a_waltz_has_three_beats_to_the_bar_from_its_first_note():
    harmony = analyse(waltz(100.0))
    pulse = harmony.pulse
    assert pulse.steady
    assert pulse.bpm == pytest.approx(100.0, rel=0.02)
    assert pulse.beats_per_bar == 3
    assert pulse.beats[pulse.first_downbeat] == pytest.approx(0.0, abs=0.05)
    assert harmony.chord_at(0.3) == ChordLabel(0, "maj")
    assert harmony.chord_at(1.8 + 0.3) == ChordLabel(5, "maj")  # the second bar, on F


def test_beats_cover_the_notes_and_chords_fill_the_beats():
    for notes in (waltz(140.0), rubato(3)):
        harmony = analyse(notes)
        beats = harmony.pulse.beats
        assert beats[0] <= min(n.start for n in notes) * 0.01
        assert beats[-1] >= max(n.end for n in notes) * 0.01
        assert all(a < b for a, b in itertools.pairwise(beats))
        assert len(harmony.chords) == len(beats) - 1


def rubato(seed: int, seconds: float = 40.0) -> list[Note]:
    """Chords and single notes at random times: no pulse to find."""
    rnd = random.Random(seed)
    notes, t = [], 0.0
    while t < seconds:
        root = rnd.randrange(36, 48)
        for pitch in (root, root + 7, root + 16, rnd.randrange(60, 84)):
            at = t + rnd.uniform(0.0, 0.2)
            notes += held([pitch], at, at + rnd.uniform(0.3, 2.5), rnd.randrange(40, 100))
        t += rnd.uniform(0.3, 2.7)
    return sorted(notes)


@pytest.mark.parametrize("seed", range(5))
def test_a_rubato_piece_has_no_steady_pulse_but_slow_breaths(seed):
    pulse = find_pulse(rubato(seed))
    assert not pulse.steady
    gaps = [b - a for a, b in zip(pulse.beats, pulse.beats[1:])]
    assert all(1.5 <= g <= 3.0 for g in gaps)


def test_the_analysis_is_deterministic_and_fast():
    notes, _ = realised_truth(PROGRESSIONS[3][1], 11)
    minute = [n for n in notes if n.start < 6000]
    assert analyse(minute) == analyse(list(minute))
    started = time.perf_counter()
    harmony = analyse(minute)
    assert time.perf_counter() - started < 2.0  # well under 0.1 s on an idle core; this guards the order, not a speed
    assert isinstance(harmony, Harmony)


@pytest.mark.parametrize(
    ("symbol", "quality"),
    [
        ("C", "maj"),
        ("C6", "maj"),
        ("C69", "maj"),
        ("Cm", "min"),
        ("Cm6", "min"),
        ("CminMaj7", "min"),
        ("C7", "dom7"),
        ("C13b9", "dom7"),
        ("C7alt", "dom7"),
        ("C7#5", "dom7"),
        ("Cmaj7", "maj7"),
        ("Cm7", "min7"),
        ("Cm9", "min7"),
        ("Cm7b5", "hdim"),
        ("Cdim", "dim"),
        ("Cdim7", "dim"),
        ("C7sus4", "sus"),
        ("Csus2", "sus2"),
    ],
)
def test_lead_sheet_chords_fold_into_the_qualities(symbol, quality):
    assert label_of(C.parse_chord(symbol)) == ChordLabel(0, quality)


def test_augmented_triads_and_no_chord_are_not_scored():
    assert label_of(C.parse_chord("C+")) is None
    assert label_of(None) is None
