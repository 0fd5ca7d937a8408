"""Jazz lead sheets realised as solo jazz piano: chord symbols, bass, swing, seeds, and the real corpus."""

import io
import itertools
from collections import Counter
from pathlib import Path

import pretty_midi
import pytest

from training import chords as C
from training import jazz as J
from training import leadsheets as L

ROOT = Path("/work/shared/corpus/jazz-leadsheets")

CHANGES = [  # eight bars of 4/4, every change on a beat
    ("Dm7", 2),
    ("G7", 2),
    ("Cmaj7", 4),
    ("Cm7", 2),
    ("F7", 2),
    ("Bbmaj7", 4),
    ("Ebm7", 2),
    ("Ab7alt", 2),
    ("Dbmaj7/F", 4),
    ("Em7b5", 2),
    ("A7b9", 2),
    ("Dm6", 4),
]


def sheet(changes=CHANGES, feel="swing", tempo=None, beats_per_bar=4) -> L.LeadSheet:
    spans, t = [], 0.0
    for symbol, beats in changes:
        spans.append(L.ChordSpan(t, beats, symbol, C.parse_chord(symbol), "A"))
        t += beats
    return L.LeadSheet(
        id="test/chart",
        title="Test chart",
        source="test",
        licence="ours",
        chords=tuple(spans),
        beats_per_bar=beats_per_bar,
        feel=feel,
        tempo=tempo,
    )


def notes_of(midi: pretty_midi.PrettyMIDI) -> list[tuple[float, float, int, int]]:
    return [(n.start, n.end, n.pitch, n.velocity) for inst in midi.instruments for n in inst.notes]


def seconds_per_beat(midi: pretty_midi.PrettyMIDI) -> float:
    return 60.0 / midi.get_tempo_changes()[1][0]


@pytest.mark.parametrize(
    ("symbol", "root", "intervals"),
    [
        ("C", 0, {0, 4, 7}),
        ("Cmaj7", 0, {0, 4, 7, 11}),
        ("Cj7", 0, {0, 4, 7, 11}),
        ("C^7", 0, {0, 4, 7, 11}),
        ("C7", 0, {0, 4, 7, 10}),
        ("Cm7", 0, {0, 3, 7, 10}),
        ("C-7", 0, {0, 3, 7, 10}),
        ("Cmin7", 0, {0, 3, 7, 10}),
        ("Cm7b5", 0, {0, 3, 6, 10}),
        ("Ch7", 0, {0, 3, 6, 10}),
        ("Co7", 0, {0, 3, 6, 9}),
        ("Cdim7", 0, {0, 3, 6, 9}),
        ("C6", 0, {0, 4, 7, 9}),
        ("Cm6", 0, {0, 3, 7, 9}),
        ("C-69", 0, {0, 2, 3, 7, 9}),
        ("CminMaj7", 0, {0, 3, 7, 11}),
        ("C-j7", 0, {0, 3, 7, 11}),
        ("C9", 0, {0, 2, 4, 7, 10}),
        ("C13", 0, {0, 2, 4, 7, 9, 10}),
        ("C7b9", 0, {0, 1, 4, 7, 10}),
        ("C13b9", 0, {0, 1, 4, 7, 9, 10}),
        ("C7#11", 0, {0, 4, 6, 7, 10}),
        ("C9#11", 0, {0, 2, 4, 6, 7, 10}),
        ("C7b9b13", 0, {0, 1, 4, 7, 8, 10}),
        ("C7alt", 0, {0, 1, 3, 4, 6, 8, 10}),
        ("C7+", 0, {0, 4, 8, 10}),
        ("C7sus", 0, {0, 5, 7, 10}),
        ("Cmaj7#11", 0, {0, 4, 6, 7, 11}),
        ("Bb7", 10, {0, 4, 7, 10}),
        ("F#m7", 6, {0, 3, 7, 10}),
        ("Ebmaj7", 3, {0, 4, 7, 11}),
        ("Cqq", 0, {0, 4, 7}),  # an unknown quality falls back to the triad
    ],
)
def test_chord_symbols_parse_to_pitch_class_sets(symbol, root, intervals):
    chord = C.parse_chord(symbol)
    assert chord is not None
    assert chord.root == root
    assert chord.pitch_classes == {(root + i) % 12 for i in intervals}


@pytest.mark.parametrize(
    ("symbol", "intervals"),
    [
        ("C79b", {0, 1, 4, 7, 10}),
        ("C711#", {0, 4, 6, 7, 10}),
        ("C79b13", {0, 1, 4, 7, 9, 10}),
        ("C79b13b", {0, 1, 4, 7, 8, 10}),
        ("C139b", {0, 1, 4, 7, 9, 10}),
        ("C-7911", {0, 2, 3, 5, 7, 10}),
        ("Cj7911#", {0, 2, 4, 6, 7, 11}),
        ("Cm7b5", {0, 3, 6, 10}),
    ],
)
def test_parkr_and_wjd_spelling_puts_the_accidental_after_the_tension(symbol, intervals):
    chord = C.parse_chord(symbol, accidentals_after=True)
    assert chord is not None and chord.pitch_classes == frozenset(intervals)


def test_slash_chords_keep_their_bass_and_no_chord_is_none():
    chord = C.parse_chord("Dm7/G")
    assert chord is not None and chord.root == 2 and chord.bass == 7 and chord.bass_pc == 7
    assert chord.pitch_classes == {2, 5, 9, 0, 7}
    assert C.parse_chord("NC") is None
    with pytest.raises(C.ChordSymbolError):
        C.parse_chord("H7")


def test_parkr_flat_roots_moved_behind_the_tension_are_put_back():
    assert L._parkr_symbol("B9b") == "Bb9"
    assert C.parse_chord(L._parkr_symbol("A13b9b"), accidentals_after=True) == C.parse_chord("Ab13b9")
    assert L._parkr_symbol("C79b") == "C79b"  # a real C7(b9) has its 7


def test_a_chart_realises_to_one_piano_with_notes_in_range():
    midi = J.realise(sheet(), seed=3)
    assert len(midi.instruments) == 1 and midi.instruments[0].program == 0
    notes = notes_of(midi)
    assert len(notes) > 50
    assert all(C.LOWEST_PITCH <= p <= C.HIGHEST_PITCH for _, _, p, _ in notes)
    assert all(end > start for start, end, _, _ in notes)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_every_chord_change_has_a_bass_note_from_that_chord(seed):
    chart = sheet()
    midi = J.realise(chart, seed)
    spb = seconds_per_beat(midi)
    bass = [(s, p) for s, _, p, _ in notes_of(midi) if p <= J.BASS_RANGE[1]]
    form = chart.length_beats
    choruses = round((midi.get_end_time() / spb - 1) / form)  # the last chord rings one beat longer
    changes = [(c * form + span.start, span.chord) for c in range(choruses) for span in chart.chords]
    first_bass = min(bass)[1]
    key = (first_bass - changes[0][1].bass_pc) % 12  # the seed's transposition
    for beat, chord in changes:
        near = [p for s, p in bass if abs(s - beat * spb) < 0.03]
        assert near, f"no bass note at beat {beat}"
        assert (near[0] - key) % 12 in chord.pitch_classes, f"bass at beat {beat} is not in the chord"


def test_right_hand_eighths_swing():
    chart = sheet(tempo=120)
    midi = J.realise(chart, seed=5)
    spb = seconds_per_beat(midi)
    right = [s / spb for s, _, p, _ in notes_of(midi) if p > J.COMP_RANGE[1]]
    offbeats = [b % 1 for b in right if 0.4 < b % 1 < 0.85]
    assert len(offbeats) >= 10
    assert all(f > 0.56 for f in offbeats), "an off-beat eighth sits at the straight midpoint"


def test_a_ballad_is_slow_and_in_two():
    chart = sheet(changes=[("Cmaj7", 4), ("Am7", 4), ("Dm7", 4), ("G7", 4)] * 2, feel="ballad")
    midi = J.realise(chart, seed=2)
    spb = seconds_per_beat(midi)
    assert 60.0 / spb < 90
    first_chorus = [s for s, _, p, _ in notes_of(midi) if p <= J.BASS_RANGE[1] and s < 32 * spb - 0.05]
    assert len(first_chorus) <= 2 * 8


def test_a_waltz_realises_in_three():
    chart = sheet(changes=[("Am7", 3), ("D7", 3), ("Gmaj7", 3), ("E7b9", 3)], beats_per_bar=3)
    midi = J.realise(chart, seed=1)
    assert midi.time_signature_changes[0].numerator == 3
    assert all(C.LOWEST_PITCH <= p <= C.HIGHEST_PITCH for _, _, p, _ in notes_of(midi))


def test_same_seed_same_midi_and_another_seed_another():
    chart = sheet()
    assert notes_of(J.realise(chart, 7)) == notes_of(J.realise(chart, 7))
    assert notes_of(J.realise(chart, 7)) != notes_of(J.realise(chart, 8))


def midi_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("seed", [3, 4])
def test_realise_with_chords_plays_the_same_midi_and_says_which_chord_sounds_when(seed):
    chart = sheet()
    midi, spans = J.realise_with_chords(chart, seed)
    assert midi_bytes(midi) == midi_bytes(J.realise(chart, seed))
    spb = seconds_per_beat(midi)
    assert spans[0][0] == 0.0
    assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(spans))
    assert spans[-1][1] == pytest.approx(midi.get_end_time(), abs=spb)  # the last chord rings to the end
    form = [span.chord for span in chart.chords]
    key = (spans[0][2].root - form[0].root) % 12
    assert [c.transposed(-key) for _, _, c in spans] == form * (len(spans) // len(form))
    for start, end, chord in spans[:-1]:
        assert round((end - start) / spb) in (2, 4)  # CHANGES' durations, in seconds
        assert chord is not None


@pytest.mark.skipif(not ROOT.is_dir(), reason="the jazz lead-sheet corpus is not here")
def test_the_corpus_yields_hundreds_of_sheets_and_the_first_twenty_realise():
    skipped: Counter[str] = Counter()
    sheets = list(L.iter_lead_sheets(ROOT, skipped))
    assert len(sheets) >= 300
    assert sum(skipped.values()) < len(sheets) / 10
    assert len({s.id for s in sheets}) == len(sheets)
    solos = [s for s in sheets if s.melody]
    assert solos, "no Weimar Jazz Database solos parsed"
    for chart in [*sheets[:20], solos[0]]:
        notes = notes_of(J.realise(chart, seed=0))
        assert notes
        assert all(C.LOWEST_PITCH <= p <= C.HIGHEST_PITCH and e > s for s, e, p, _ in notes)


@pytest.mark.skipif(not ROOT.is_dir(), reason="the jazz lead-sheet corpus is not here")
def test_realise_corpus_names_each_version_and_its_licence():
    pieces = list(J.realise_corpus(ROOT, versions=2, limit=3, sources=("parkr",)))
    assert len(pieces) == 6
    assert len({piece_id for piece_id, _, _ in pieces}) == 6
    assert all("MIT" in note for _, _, note in pieces)
