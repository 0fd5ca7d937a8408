"""A piano-roll PNG of a piece, small enough for a chat preview (Pillow, no plotting stack)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image, ImageDraw

from . import vocab as V
from .tokenizer import Note

BACKGROUND = (18, 20, 28)
OCTAVE_LINE = (42, 46, 60)
LOW, HIGH = (70, 110, 220), (255, 140, 80)  # colour for soft → loud notes


def _blend(t: float) -> tuple[int, int, int]:
    return tuple(round(a + (b - a) * t) for a, b in zip(LOW, HIGH))  # type: ignore[return-value]


def piano_roll(notes: Sequence[Note], width: int = 960, height: int = 320) -> Image.Image:
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if not notes:
        return img
    lo = min(min(n.pitch for n in notes) - 2, V.PIANO_RANGE[0] + 15)
    hi = max(max(n.pitch for n in notes) + 2, V.PIANO_RANGE[1] - 15)
    end = max(n.end for n in notes)
    row = height / (hi - lo + 1)
    x = lambda tick: tick * (width - 1) / end
    y = lambda pitch: (hi - pitch) * row
    for c in range(lo - lo % 12 + 12, hi + 1, 12):  # a faint line at every C
        draw.line([(0, y(c) + row), (width, y(c) + row)], fill=OCTAVE_LINE)
    for n in sorted(notes, key=lambda n: n.velocity):
        draw.rectangle(
            [x(n.start), y(n.pitch), max(x(n.end) - 1, x(n.start) + 1), y(n.pitch) + max(row - 1, 1)],
            fill=_blend(min(max((n.velocity - 30) / 70, 0.0), 1.0)),
        )
    return img


def write_piano_roll(notes: Sequence[Note], path: str | os.PathLike[str]) -> None:
    piano_roll(notes).save(path, format="PNG", optimize=True)
