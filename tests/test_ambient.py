"""Ambient solo piano: slow progressions from three sources, soft sustained texture, seeds, and the corpus."""

import statistics
from collections import Counter
from pathlib import Path

import pretty_midi
import pytest

from training import ambient as A
from training import chords as C
from training import leadsheets as L

ROOT = Path("/work/shared/corpus/jazz-leadsheets")


def notes_of(midi: pretty_midi.PrettyMIDI) -> list[tuple[float, float, int, int]]:
    return [(n.start, n.end, n.pitch, n.velocity) for inst in midi.instruments for n in inst.notes]


def some_progressions(n: int = 6) -> list[A.Progression]:
    generated = list(A.progressions(None, modal=n, diatonic=n))
    return generated[: n // 2] + generated[n : n + n // 2]


def figures(midi: pretty_midi.PrettyMIDI) -> dict[str, float]:
    notes = notes_of(midi)
    seconds = midi.get_end_time()
    polyphony = [sum(1 for s, e, _, _ in notes if s <= start < e) for start, _, _, _ in notes]
    return {
        "notes_per_second": len(notes) / seconds,
        "velocity": statistics.mean(v for _, _, _, v in notes),
        "polyphony": statistics.mean(polyphony),
        "median_length": statistics.median(e - s for s, e, _, _ in notes),
    }


def test_a_progression_realises_to_one_piano_in_range_and_60_to_150_seconds():
    for seed, progression in enumerate(some_progressions(8)):
        midi = A.realise(progression, seed)
        assert len(midi.instruments) == 1 and midi.instruments[0].program == 0
        notes = notes_of(midi)
        assert all(C.LOWEST_PITCH <= p <= C.HIGHEST_PITCH for _, _, p, _ in notes)
        assert all(e > s for s, e, _, _ in notes)
        assert all(A.VELOCITY_RANGE[0] <= v <= A.VELOCITY_RANGE[1] for _, _, _, v in notes)
        assert A.LENGTH_RANGE[0] <= midi.get_end_time() <= A.LENGTH_RANGE[1]


def test_same_seed_same_midi_and_another_seed_another():
    progression = A.modal_progression(3)
    assert notes_of(A.realise(progression, 7)) == notes_of(A.realise(progression, 7))
    assert notes_of(A.realise(progression, 7)) != notes_of(A.realise(progression, 8))
    assert A.modal_progression(3) == progression and A.modal_progression(4) != progression


def test_on_average_it_is_sparse_soft_and_sustained():
    pieces = [figures(A.realise(p, 100 + seed)) for seed, p in enumerate(some_progressions(8))]
    mean = {k: statistics.mean(f[k] for f in pieces) for k in pieces[0]}
    assert 1.3 <= mean["notes_per_second"] <= 4.0
    assert 35 <= mean["velocity"] <= 60
    assert 4 <= mean["polyphony"] <= 8.5
    assert mean["median_length"] >= 1.5
    assert all(f["median_length"] >= 1.2 for f in pieces)


def test_chords_change_no_faster_than_every_two_bars():
    for seed, progression in enumerate(some_progressions(8)):
        arr = A.plan(progression, seed)
        assert A.TEMPO_RANGE[0] <= arr.tempo <= A.TEMPO_RANGE[1]
        assert arr.beats_per_bar in (3, 4)
        chords = [s for s in arr.spans if s.chord is not None]
        assert all(2 <= s.bars <= 8 for s in chords)
        assert all(a.start + a.bars == b.start for a, b in zip(arr.spans, arr.spans[1:]))
        assert all(s.bars <= 2 for s in arr.spans if s.chord is None)  # silences are a bar or two


def test_generated_chords_belong_to_their_mode():
    for progression in A.progressions(None, modal=20, diatonic=20):
        assert progression.scale is not None and 2 <= len(progression.chords) <= 4
        assert progression.chords[0].root == progression.tonic or progression.id.startswith("diatonic/")
        for chord in progression.chords:
            assert chord.pitch_classes <= progression.scale, progression.id


def test_lead_sheet_chords_are_thinned_and_reharmonised():
    spans, t = [], 0.0
    chart = [("Dm7", 2), ("G7", 2), ("Cmaj7", 12), ("Fm7", 2), ("Bb7", 2), ("Ebmaj7", 12), ("Am7", 16)]
    chart += [("Em7b5", 2), ("A7b9", 2), ("Dm7", 12), ("Dm7", 2), ("G7", 2), ("C6", 12)]
    for symbol, beats in chart:
        spans.append(L.ChordSpan(t, beats, symbol, C.parse_chord(symbol), "A"))
        t += beats
    sheet = L.LeadSheet("test/chart", "Test", "test", "ours", tuple(spans))
    progression = A.from_lead_sheet(sheet)
    assert progression is not None and progression.id == "test/chart"
    # one chord per window (the arrival, not the ii–V), and the last C left out as the cycle returns to it
    assert [c.root for c in progression.chords] == [0, 3, 9, 2]
    assert progression.tonic == 0
    assert notes_of(A.realise(progression, 1))


@pytest.mark.skipif(not ROOT.is_dir(), reason="the jazz lead-sheet corpus is not here")
def test_lead_sheet_progressions_from_the_corpus_realise():
    skipped: Counter[str] = Counter()
    charts = list(A.progressions(ROOT, lead_sheets=5, modal=0, diatonic=0, skipped=skipped))
    assert len(charts) == 5 and all(p.id.startswith("parkr/") and "MIT" in p.licence for p in charts)
    for seed, progression in enumerate(charts[:3]):
        midi = A.realise(progression, seed)
        assert A.LENGTH_RANGE[0] <= midi.get_end_time() <= A.LENGTH_RANGE[1]
        assert all(C.LOWEST_PITCH <= p <= C.HIGHEST_PITCH for _, _, p, _ in notes_of(midi))


def test_realise_corpus_groups_versions_under_the_progression_id():
    pieces = list(A.realise_corpus(None, versions=2, modal=2, diatonic=1))
    ids = [piece_id for piece_id, _, _ in pieces]
    assert len(ids) == 6 and len(set(ids)) == 6
    groups = Counter(piece_id.rpartition("/v")[0] for piece_id in ids)
    assert groups == {"modal/0000": 2, "modal/0001": 2, "diatonic/0000": 2}
    assert all("realised by training.ambient, seed" in note for _, _, note in pieces)
    first, second = pieces[0][1], pieces[1][1]
    assert notes_of(first) != notes_of(second)  # versions differ
