"""The piano-roll preview: notes where their time and pitch say, labelled axes, the primer mark,
a legend, and small enough for a chat thumbnail. Read back from the pixels Pillow drew."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from generator import vocab as V
from generator.pianoroll import (
    BACKGROUND,
    HIGH,
    LOW,
    PLOT,
    PRIMER,
    octave_name,
    piano_roll,
    tick_step,
    velocity_colour,
    write_piano_roll,
)
from generator.render import Tags
from generator.tokenizer import Note, encode_notes
from generator.track import roll_title, write_track


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(int)


def where(px: np.ndarray, colour) -> np.ndarray:
    return (px == np.array(colour)).all(axis=2)


def plot_box(px: np.ndarray) -> tuple[int, int, int, int]:
    """left, top, right, bottom (exclusive) of the drawn area, found by its background shade."""
    ys, xs = np.nonzero(where(px, PLOT))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def text_runs(mask_rows: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive True rows: one per line of text."""
    runs, start = [], None
    for i, on in enumerate([*mask_rows, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def test_notes_land_at_their_time_and_pitch_with_c4_labelled_level_with_middle_c():
    loud, soft = velocity_colour(100), velocity_colour(30)
    notes = [Note(1000, 1100, 60, 100), Note(0, 2000, 72, 30), Note(1900, 2000, 48, 30)]  # a 20 s piece
    px = pixels(piano_roll(notes))
    left, top, right, bottom = plot_box(px)
    width = right - left

    ys, xs = np.nonzero(where(px[top:bottom, left:right], loud))  # the legend has the loud colour too
    ys, xs = ys + top, xs + left
    assert abs(xs.min() - (left + 0.50 * width)) <= 1  # 10 s of 20
    assert abs(xs.max() + 1 - (left + 0.55 * width)) <= 2  # until 11 s
    middle_c = (ys.min() + ys.max()) / 2

    soft_rows = np.nonzero(where(px[top:bottom, left:right], soft).any(axis=1))[0] + top
    c5_rows = [y for y in soft_rows if y < ys.min()]
    c3_rows = [y for y in soft_rows if y > ys.max()]
    assert c5_rows and c3_rows  # an octave up is drawn higher, an octave down lower
    c5, c3 = (min(c5_rows) + max(c5_rows)) / 2, (min(c3_rows) + max(c3_rows)) / 2
    assert abs((middle_c - c5) - (c3 - middle_c)) <= 1  # and the same distance apart

    margin = px[top:bottom, :left]
    label_rows = (np.abs(margin - np.array(BACKGROUND)).sum(axis=2) > 150).any(axis=1)
    runs = [(a + top, b + top) for a, b in text_runs(label_rows)]
    centres = [(a + b) / 2 for a, b in runs]
    assert len(runs) == len(range(36, 85, 12))  # C2 … C6: the range always shown, one label each
    assert min(abs(c - middle_c) for c in centres) <= 3  # a label level with middle C: "C4"
    assert min(abs(c - c5) for c in centres) <= 3


def test_the_time_axis_has_a_tick_below_each_round_second_count():
    px = pixels(piano_roll([Note(0, 3000, 60, 70)]))  # 30 s: a tick every 5 s
    left, _, right, bottom = plot_box(px)
    below = px[bottom + 2, left - 1 : right + 1]  # the tick marks hang under the axis line
    ticks = np.nonzero(np.abs(below - np.array(BACKGROUND)).sum(axis=1) > 150)[0] + left - 1
    expected = [left + i * (right - left) / 6 for i in range(7)]
    assert len(ticks) == 7
    assert all(abs(t - e) <= 1 for t, e in zip(ticks, expected))
    labels = np.abs(px[bottom + 8 :] - np.array(BACKGROUND)).sum(axis=2) > 150
    assert labels[:, left - 2 : left + 20].any() and labels[:, right - 40 : right].any()  # "0 s", "30 s"


@pytest.mark.parametrize("seconds", [3.5, 9, 10, 30, 59, 60, 75, 130, 300, 600, 900])
def test_tick_spacing_gives_a_handful_of_labels(seconds):
    step = tick_step(seconds)
    assert step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
    assert 4 <= int(seconds // step) + 1 <= 10


def test_octave_names_count_middle_c_as_c4():
    assert [octave_name(p) for p in (24, 36, 60, 96, 108)] == ["C1", "C2", "C4", "C7", "C8"]


def test_the_primer_mark_is_drawn_where_the_primer_ends_and_only_when_asked():
    notes = [Note(t, t + 50, 60 + t // 100 % 12, 80) for t in range(0, 2000, 50)]
    px = pixels(piano_roll(notes, primer_end=5.0))
    left, top, right, bottom = plot_box(px)
    lower = where(px, PRIMER)[(top + bottom) // 2 : bottom]  # the dashes, below the label
    columns = np.nonzero(lower.any(axis=0))[0]
    assert columns.size and abs(columns.mean() - (left + 0.25 * (right - left))) <= 2
    assert lower.sum() > (bottom - top) // 6  # a dashed line down the plot, not a dot

    assert not where(pixels(piano_roll(notes)), PRIMER).any()
    assert not where(pixels(piano_roll(notes, primer_end=None)), PRIMER).any()


def test_the_title_and_the_velocity_legend_sit_above_the_notes():
    notes = [Note(0, 500, 60, 70)]
    with_title, without = pixels(piano_roll(notes, title="Ambient · seed 42 · 0:05")), pixels(piano_roll(notes))
    top = plot_box(with_title)[1]
    strip_with, strip_without = with_title[:top], without[:top]
    half = with_title.shape[1] // 2
    assert (np.abs(strip_with[:, :half] - np.array(BACKGROUND)).sum(axis=2) > 150).sum() > 200
    assert not (strip_without[:, :half] != np.array(BACKGROUND)).any()
    for strip in (strip_with, strip_without):  # the soft → loud ramp, at the right, with or without a title
        assert where(strip[:, half:], LOW).any() and where(strip[:, half:], HIGH).any()


def test_an_empty_piece_still_gets_axes_and_labels():
    img = piano_roll([])
    assert img.size == (960, 400)
    px = pixels(img)
    left, top, right, bottom = plot_box(px)
    assert right - left > 800 and bottom - top > 250
    ink = np.abs(px - np.array(BACKGROUND)).sum(axis=2) > 150
    assert ink[bottom + 4 :, left:right].sum() > 100  # time labels
    assert ink[top:bottom, :left].sum() > 100  # octave labels


def test_a_dense_minute_is_a_small_png(tmp_path):
    rng = random.Random(0)
    notes = [
        Note(t, t + rng.randint(5, 150), rng.randint(21, 108), rng.randint(30, 100))
        for t in range(0, 6000, 4)  # 25 notes a second for a minute
    ]
    path = tmp_path / "roll.png"
    write_piano_roll(notes, path, title="Jazz · seed 7 · 1:00", primer_end=12.0)
    img = Image.open(path)
    assert img.format == "PNG" and img.size == (960, 400)
    assert path.stat().st_size < 150_000


def test_a_small_grid_tile_still_draws():
    """bench/quality.py tiles 480×160 rolls; the labels shrink with them instead of covering the notes."""
    px = pixels(piano_roll([Note(0, 300, 60, 100)], 480, 160))
    left, top, right, bottom = plot_box(px)
    assert px.shape[:2] == (160, 480)
    assert where(px, velocity_colour(100)).sum() > 100
    assert left < 40 and right > 440 and bottom - top > 100


def test_roll_title_names_genre_seed_and_length():
    notes = [Note(0, 3000, 60, 70)]
    assert roll_title(Tags("Ambient #42", "calm"), notes, seed=42) == "Ambient · seed 42 · 0:30"
    assert roll_title(Tags("Jazz #7", "jazz"), [Note(0, 6540, 60, 70)]) == "Jazz #7 · 1:05"


def test_write_track_marks_where_the_primer_ends(tmp_path):
    primer = encode_notes([Note(t, t + 50, 60, 80) for t in range(0, 500, 50)])  # 5 s
    composed = encode_notes([Note(t, t + 50, 67, 80) for t in range(0, 500, 50)])  # 5 more
    tokens = [V.genre_token("calm"), *primer, *composed]
    files = write_track(tokens, tmp_path / "t", Tags("Ambient #1", "calm"), seed=1, primer_until=1 + len(primer))
    px = pixels(Image.open(files.png))
    left, top, right, bottom = plot_box(px)
    columns = np.nonzero(where(px, PRIMER)[(top + bottom) // 2 : bottom].any(axis=0))[0]
    assert columns.size and abs(columns.mean() - (left + right) / 2) <= 2

    files = write_track(tokens, tmp_path / "u", Tags("Ambient #1", "calm"))
    assert not where(pixels(Image.open(files.png)), PRIMER).any()
