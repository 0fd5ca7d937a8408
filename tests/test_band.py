"""Band mode: the genre's band arranged around the piano from its own pulse and chords; solo unchanged."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest
from PIL import Image

from generator import vocab as V
from generator.arrange import band_midi_of, band_parts
from generator.arrangements import check_arrangement, default_arrangement
from generator.errors import GeneratorError
from generator.params import SamplingParams
from generator.pianoroll import PART_COLOURS
from generator.postprocess import postprocess
from generator.render import Tags
from generator.tokenizer import decode_notes, encode_notes, notes_of, notes_to_midi
from generator.track import Recipe, RecipeError, write_track
from training import chords as C
from training import jazz as J
from training import leadsheets as L

CHANGES = [
    ("Dm7", 4),
    ("G7", 4),
    ("Cmaj7", 8),
    ("Am7", 4),
    ("D7", 4),
    ("Gmaj7", 8),
    ("Em7b5", 4),
    ("A7", 4),
    ("Dm7", 8),
]


def realised(changes=CHANGES, seed=3, beats_per_bar=4):
    """Solo jazz piano over known changes (our lead-sheet realiser), as the tick-grid notes the
    arranger reads."""
    spans, t = [], 0.0
    for symbol, beats in changes:
        spans.append(L.ChordSpan(t, beats, symbol, C.parse_chord(symbol), "A"))
        t += beats
    sheet = L.LeadSheet(
        "test/band", "Band test", "test", "ours", tuple(spans), beats_per_bar=beats_per_bar, feel="straight", tempo=100
    )
    return notes_of(J.realise(sheet, seed))


@pytest.fixture(scope="module")
def piano():
    return realised()


def bass_on_beats(genre, notes, seed=1):
    harmony, parts = band_parts(notes, genre, seed)
    bass = next(p for p in parts if p.name == "Bass")
    beats = np.array(harmony.pulse.beats)
    on_beat = [n for n in bass.notes if np.min(np.abs(beats - n.start)) < 0.03]
    return harmony, on_beat


@pytest.mark.parametrize("genre", ["jazz", "pop"])
def test_bass_notes_on_the_beat_are_tones_of_the_chord_recognised_there(piano, genre):
    harmony, on_beat = bass_on_beats(genre, piano)
    assert harmony.pulse.steady
    assert len(on_beat) > 20
    tones = [n.pitch % 12 in harmony.chord_at(n.start + 0.01).pitch_classes for n in on_beat]
    assert np.mean(tones) >= 0.9


def test_a_walking_bass_walks_and_approaches_changes_between_beats(piano):
    harmony, on_beat = bass_on_beats("jazz", piano)
    beat = float(np.median(np.diff(harmony.pulse.beats)))
    pitches = [n.pitch for n in on_beat]
    assert np.mean(np.diff(pitches) != 0) > 0.8  # it moves, a quarter note a beat
    assert all(n.end - n.start < beat for n in on_beat)


def test_the_band_is_deterministic_for_a_seed_and_named_one_track_per_part(piano, tmp_path):
    a, b, c = (band_midi_of(piano, "jazz", seed) for seed in (7, 7, 8))
    assert [i.name for i in a.instruments] == ["Piano", "Bass", "Drums"]
    key = lambda m: [(i.name, [(n.start, n.end, n.pitch, n.velocity) for n in i.notes]) for i in m.instruments]
    assert key(a) == key(b)
    assert key(a) != key(c)
    # the piano is the composed one, untouched
    assert [(n.pitch, n.velocity) for n in a.instruments[0].notes] == [(n.pitch, n.velocity) for n in piano]


@pytest.mark.parametrize("genre", ["jazz", "pop"])
def test_drums_play_only_on_channel_ten(piano, genre, tmp_path):
    path = tmp_path / "band.mid"
    band_midi_of(piano, genre, 1).write(str(path))
    channels = {}
    for track in mido.MidiFile(path).tracks:
        name = next((m.name for m in track if m.type == "track_name"), "")
        channels[name] = {m.channel for m in track if m.type == "note_on"}
    assert channels["Drums"] == {9}
    assert all(9 not in chans for name, chans in channels.items() if name != "Drums")


def test_ambient_gets_a_pad_and_a_drone_and_no_drums(piano):
    harmony, parts = band_parts(piano, "ambient", 1)
    assert [p.name for p in parts] == ["Pad", "Drone"]
    assert not any(p.is_drum for p in parts)
    pad = parts[0]
    held = [n for n in pad.notes if n.pitch % 12 in harmony.chord_at((n.start + n.end) / 2).pitch_classes]
    assert len(held) / len(pad.notes) > 0.95
    assert pad.expression  # slow swells
    # a tone common to two chords is held through the change, not struck again
    ends = {(n.pitch, round(n.end, 6)) for n in pad.notes}
    assert not any((n.pitch, round(n.start, 6)) in ends for n in pad.notes)


def test_quiet_piano_gets_a_quiet_band(piano):
    soft = [type(n)(n.start, n.end, n.pitch, 35) for n in piano]
    loud = [type(n)(n.start, n.end, n.pitch, 100) for n in piano]
    level = lambda notes: np.mean([n.velocity for p in band_parts(notes, "pop", 1)[1] for n in p.notes])
    assert level(soft) < level(loud) - 20


def test_a_rubato_piece_gets_no_drums():
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.exponential(40, 120)).astype(int)  # onsets at random, no pulse
    notes = sorted(
        type(realised()[0])(int(s), int(s) + 60, int(p), 60)
        for s, p in zip(starts, rng.choice([48, 52, 55, 60, 64, 67], 120))
    )
    harmony, parts = band_parts(notes, "pop", 1)
    assert not harmony.pulse.steady
    assert not any(p.is_drum for p in parts)


def test_each_genre_says_its_default_and_bad_names_are_refused():
    assert default_arrangement("classic") == "solo"
    assert {default_arrangement(g) for g in ("jazz", "ambient", "pop")} == {"band"}
    assert check_arrangement(" Band ") == "band"
    with pytest.raises(GeneratorError, match="solo, band"):
        check_arrangement("orchestra")


def tokens_of(notes):
    return [V.genre_token("jazz"), *encode_notes(notes)]


def test_solo_writes_exactly_what_it_wrote_before_band_mode(piano, tmp_path):
    tokens = tokens_of(piano[:200])
    files = write_track(tokens, tmp_path / "solo", Tags("Jazz #1", "jazz"), 0, seed=5)
    expected = tmp_path / "expected.mid"
    notes_to_midi(decode_notes(postprocess(tokens)), program=0).write(str(expected))
    assert files.midi.read_bytes() == expected.read_bytes()


def test_a_band_track_renders_every_part_and_colours_them_on_the_roll(piano, tmp_path):
    tokens = tokens_of(piano[:200])
    solo = write_track(tokens, tmp_path / "solo", Tags("Jazz #1", "jazz"), 0, seed=5)
    band = write_track(tokens, tmp_path / "band", Tags("Jazz #1", "jazz"), 0, seed=5, arrangement="band")
    assert len(mido.MidiFile(band.midi).tracks) > len(mido.MidiFile(solo.midi).tracks)
    assert band.mp3.stat().st_size > 0 and abs(band.seconds - solo.seconds) < 3
    roll = np.asarray(Image.open(io.BytesIO(band.png.read_bytes())).convert("RGB")).reshape(-1, 3)
    bass_colour = np.array(PART_COLOURS[0])
    assert (np.abs(roll - bass_colour).sum(axis=1) == 0).sum() > 200  # the bass part's notes and its swatch


def test_the_recipe_records_the_arrangement_and_old_recipes_read_as_solo():
    recipe = Recipe("m", "ab" * 32, "jazz", 1, SamplingParams(), 30.0, arrangement="band")
    assert "arrangement=band" in recipe.summary()
    assert Recipe.parse(recipe.summary()).arrangement == "band"
    solo = Recipe("m", "ab" * 32, "jazz", 1, SamplingParams(), 30.0)
    assert "arrangement" not in solo.summary() and Recipe.parse(solo.summary()).arrangement == "solo"
    with pytest.raises(RecipeError, match="arrangement"):
        Recipe.parse(solo.summary() + " arrangement=duet")
