"""Event tokenizer: the published vocabulary, round trips, decoding rules, primers."""

from __future__ import annotations

import glob
import io
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator import PrimerError, UnknownGenreError
from generator import vocab as V
from generator.tokenizer import (
    Note,
    decode_notes,
    encode_midi,
    encode_notes,
    notes_of,
    notes_to_midi,
    primer_tokens,
    time_shift_tokens,
    trim_notes,
)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@st.composite
def pieces(draw):
    """Notes on the 10 ms grid, starting at 0, never two of one pitch sounding at once."""
    notes = []
    for pitch in draw(st.sets(st.integers(0, 127), min_size=1, max_size=6)):
        t = draw(st.integers(0, 300))
        for _ in range(draw(st.integers(1, 5))):
            length = draw(st.integers(1, 250))
            notes.append(Note(t, t + length, pitch, draw(st.integers(1, 127))))
            t += length + draw(st.integers(0, 150))
    first = min(n.start for n in notes)
    return sorted(Note(n.start - first, n.end - first, n.pitch, n.velocity) for n in notes)


def same_bins(a: list[Note], b: list[Note]) -> bool:
    key = lambda n: (n.start, n.end, n.pitch, V.velocity_to_bin(n.velocity))
    return sorted(map(key, a)) == sorted(map(key, b))


@settings(max_examples=200, deadline=None)
@given(pieces())
def test_notes_survive_encode_then_decode(notes):
    tokens = encode_notes(notes)
    assert all(0 <= t < V.END for t in tokens)
    assert same_bins(decode_notes(tokens), notes)


@settings(max_examples=100, deadline=None)
@given(pieces())
def test_midi_file_round_trip_through_pretty_midi(notes):
    midi = notes_to_midi(notes)
    buf = io.BytesIO()
    midi.write(buf)
    again = pretty_midi.PrettyMIDI(io.BytesIO(buf.getvalue()))
    assert same_bins(decode_notes(encode_midi(again)), notes)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, V.VOCAB_SIZE - 1), max_size=300))
def test_any_token_sequence_decodes_and_re_encodes_to_the_same_notes(tokens):
    notes = decode_notes(tokens)
    assert decode_notes(encode_notes(notes)) == notes


def test_vocabulary_layout_is_the_published_one():
    layout = (V.NOTE_ON, V.NOTE_OFF, V.VELOCITY, V.TIME_SHIFT, V.END, V.PAD, V.VOCAB_SIZE)
    assert layout == (0, 128, 256, 288, 388, 389, 394)
    assert [V.genre_token(g) for g in ("classic", "jazz", "calm", "pop")] == [390, 391, 392, 393]
    assert V.genre_token("Ambient") == V.genre_token("calm")
    assert V.genre_token("classical") == 390
    assert V.velocity_to_bin(127) == 31 and V.bin_to_velocity(0) == 1 and V.bin_to_velocity(25) == 100


def test_unknown_genre_names_the_valid_ones():
    with pytest.raises(UnknownGenreError, match="choose one of: classic, jazz, ambient, pop"):
        V.genre_token("polka")


def test_long_gaps_are_whole_second_shifts_plus_the_remainder():
    assert time_shift_tokens(250) == [387, 387, 337]  # 1 s, 1 s, 0.5 s
    assert time_shift_tokens(1) == [288]
    assert time_shift_tokens(100) == [387]
    assert time_shift_tokens(0) == []


def test_encoding_writes_velocity_before_each_note_on_and_offs_first_at_one_instant():
    notes = [Note(0, 50, 60, 80), Note(50, 100, 60, 40)]
    assert encode_notes(notes) == [256 + 20, 60, 288 + 49, 128 + 60, 256 + 10, 60, 288 + 49, 128 + 60]


def test_decoding_rules():
    # velocity 100 until set; a second note-on of a sounding pitch is ignored;
    # a note-off closes it; notes still open close at the final time
    tokens = [60, 288 + 9, 60, 288 + 9, 128 + 60, 256 + 8, 64, 288 + 29]
    assert decode_notes(tokens) == [Note(0, 20, 60, 100), Note(20, 50, 64, 32)]
    assert decode_notes([392, 389, 388, 128 + 70]) == []


def test_drums_are_skipped_and_piano_range_is_optional():
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes += [pretty_midi.Note(90, 10, 0.0, 0.5), pretty_midi.Note(90, 60, 0.5, 1.0)]
    drums = pretty_midi.Instrument(0, is_drum=True)
    drums.notes.append(pretty_midi.Note(100, 36, 0.0, 0.1))
    midi.instruments += [piano, drums]
    assert [n.pitch for n in notes_of(midi)] == [10, 60]
    # the only note left starts at 0.5 s; leading silence is dropped
    assert notes_of(midi, piano_range=True) == [Note(0, 50, 60, 90)]


def test_times_are_quantized_to_10_ms():
    midi = notes_to_midi([])
    midi.instruments[0].notes.append(pretty_midi.Note(64, 60, 0.0, 0.1234))
    midi.instruments[0].notes.append(pretty_midi.Note(64, 62, 0.0061, 0.0101))
    assert notes_of(midi) == [Note(0, 12, 60, 64), Note(1, 2, 62, 64)]


def test_trim_keeps_the_first_or_last_seconds():
    notes = [Note(0, 100, 60, 80), Note(150, 400, 62, 80), Note(500, 600, 64, 80)]
    assert trim_notes(notes, 2.0, "start") == [Note(0, 100, 60, 80), Note(150, 200, 62, 80)]
    assert trim_notes(notes, 3.0, "end") == [Note(0, 100, 62, 80), Note(200, 300, 64, 80)]
    with pytest.raises(PrimerError, match="more than 0 seconds"):
        trim_notes(notes, 0, "start")


def test_primer_errors_are_clear(tmp_path):
    with pytest.raises(PrimerError, match="not a MIDI file"):
        primer_tokens(b"RIFF....WAVEfmt ")
    with pytest.raises(PrimerError, match="damaged"):
        primer_tokens(b"MThd\x00\x00\x00\x06\x00\x01\x00\x05\x01\xe0MTrk\xff\xff")
    with pytest.raises(PrimerError, match="cannot read MIDI file"):
        primer_tokens(tmp_path / "missing.mid")
    empty = io.BytesIO()
    notes_to_midi([]).write(empty)
    with pytest.raises(PrimerError, match="no notes"):
        primer_tokens(empty.getvalue())


def _a_midi_file() -> bytes:
    out = io.BytesIO()
    notes_to_midi([Note(i * 50, i * 50 + 40, 60 + i % 12, 80) for i in range(24)]).write(out)
    return out.getvalue()


GOOD = _a_midi_file()


@pytest.mark.parametrize(
    ("data", "fault", "words"),
    [
        (b"RIFF....WAVEfmt ", "not_midi", "MThd"),
        (GOOD[:10], "cut_header", "ends inside its header"),
        (GOOD[:60], "cut_track", "ends inside a track"),
        (GOOD[:14] + b"XXXX" + GOOD[18:], "no_track_header", "MTrk"),
        (GOOD[:12] + b"\x00\x00" + GOOD[14:], "no_timing", "division of 0"),
        (GOOD[:22] + b"\x00\x00\x00\x05\x00\x45\x00\x00\x00", "bad_event", "not valid MIDI"),
    ],
    ids=["wav", "cut header", "cut track", "no MTrk", "division 0", "running status"],
)
def test_a_damaged_midi_file_is_named_for_what_is_wrong(data, fault, words):
    """The parser's own errors say little (a cut file raises an empty EOFError): each is named."""
    with pytest.raises(PrimerError) as refused:
        primer_tokens(data)
    assert refused.value.fault == fault and words in str(refused.value)
    assert "()" not in str(refused.value)


def test_primer_from_file_is_trimmed(tmp_path):
    path = tmp_path / "primer.mid"
    notes_to_midi([Note(0, 100, 60, 80), Note(150, 400, 62, 80), Note(500, 600, 64, 80)]).write(str(path))
    tokens = primer_tokens(path, seconds=3.0, side="end")
    assert decode_notes(tokens) == [Note(0, 100, 62, 80), Note(200, 300, 64, 80)]


@pytest.mark.skipif(not (CORPUS / "_encoded").is_dir(), reason="needs ../shared/corpus")
@pytest.mark.parametrize("genre", ["classic", "jazz", "calm", "pop"])
def test_encoding_agrees_with_the_reference_encoded_samples(genre):
    """The reference encoder's chunks decode to the same notes as ours, up to its rounding drift."""
    ref = np.load(sorted(glob.glob(str(CORPUS / f"_encoded/music-composer-samples/{genre}_*_0.npy")))[0]).tolist()
    ours = encode_midi(
        pretty_midi.PrettyMIDI(str(CORPUS / f"{genre}/music-composer-samples/{genre}_0.mid")), piano_range=True
    )
    theirs = sorted(decode_notes(ref), key=lambda n: (n.start, n.pitch))
    horizon = theirs[-1].start - 50  # the chunk cuts notes at its end
    theirs = [n for n in theirs if n.start < horizon]
    mine = sorted(decode_notes(ours), key=lambda n: (n.start, n.pitch))[: len(theirs)]
    assert len(theirs) > 400
    assert [(n.pitch, n.velocity) for n in mine] == [(n.pitch, n.velocity) for n in theirs]
    # the reference truncates some shifts by a tick (float rounding), so its clock drifts a little
    assert all(abs(a.start - b.start) <= 2 + 0.02 * b.start for a, b in zip(mine, theirs))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(1, 200), st.integers(40, 44), st.integers(1, 127)),
        min_size=1,
        max_size=40,
    )
)
def test_overlapping_notes_of_one_pitch_become_clean_notes_that_round_trip(raw):
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes += [pretty_midi.Note(v, p, s / 100, (s + d) / 100) for s, d, p, v in raw]
    midi.instruments.append(inst)
    notes = notes_of(midi)
    for a in notes:  # never two of one pitch sounding at once
        assert not [b for b in notes if b is not a and b.pitch == a.pitch and b.start < a.end and a.start < b.end]
    assert same_bins(decode_notes(encode_notes(notes)), notes)
