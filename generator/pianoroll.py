"""A piano-roll PNG of a piece, small enough for a chat preview (Pillow, no plotting stack).

Time runs left to right in seconds, pitch bottom to top with every C labelled, colour is loudness
(the legend at the top right), and a dashed line marks where a primer ends and the model takes over.
A band's parts (`Layer`) are drawn under the piano, one colour each and named in the legend; drum
hits go on a strip along the bottom, since their keys are not pitches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from . import vocab as V
from .tokenizer import Note

BACKGROUND = (18, 20, 28)
PLOT = (28, 31, 42)  # a shade lighter than the margins, so the drawn area reads as a frame
GRID = (50, 55, 72)
TEXT = (205, 210, 222)
DIM_TEXT = (140, 146, 162)
PRIMER = (250, 225, 90)  # no note colour is yellow, so the mark never hides among the notes
LOW, HIGH = (70, 110, 220), (255, 140, 80)  # colour for soft → loud notes
PART_COLOURS = ((80, 200, 130), (185, 120, 235), (70, 200, 215), (235, 110, 160))  # never the piano's ramp
DRUM_COLOUR = (175, 180, 195)
SOFT, LOUD = 30, 100  # the velocities postprocess.clip_velocities keeps a piece within

# Sizes are for the default 960×400 and scale with the image: at 400 px wide in a chat the labels
# are still about 9 px tall.
BASE_WIDTH, BASE_HEIGHT = 960, 400
FONT_PX, TITLE_PX = 24, 28
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
MAX_TICKS = 10
EMPTY_SECONDS = 10.0  # the time axis an empty piece still gets
DEFAULT_RANGE = (36, 84)  # C2–C6: at least this much keyboard, so sparse pieces don't look huge

FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "DejaVuSans.ttf",  # Pillow also looks in the platform's font folders
)
BOLD_FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "DejaVuSans-Bold.ttf")


@lru_cache(maxsize=32)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in BOLD_FONT_FILES if bold else FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:  # Pillow ≥ 10.1 carries a scalable font of its own, for hosts (the Docker image) without DejaVu
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _has_glyph(font, char: str) -> bool:
    """Whether `font` draws `char` itself rather than its missing-glyph box (Pillow's own font has no ▸)."""
    missing = font.getmask("\uffff")
    mask = font.getmask(char)
    return mask.size != missing.size or bytes(mask) != bytes(missing)


def _blend(t: float) -> tuple[int, int, int]:
    return tuple(round(a + (b - a) * t) for a, b in zip(LOW, HIGH))  # type: ignore[return-value]


def velocity_colour(velocity: int) -> tuple[int, int, int]:
    return _blend(min(max((velocity - SOFT) / (LOUD - SOFT), 0.0), 1.0))


def tick_step(seconds: float) -> int:
    """The smallest round step that puts at most MAX_TICKS labelled ticks (0 included) on `seconds`."""
    return next((s for s in TICK_STEPS if seconds / s < MAX_TICKS), TICK_STEPS[-1])


def clock(seconds: float) -> str:
    """0:30, 1:05, 12:00: how long a piece is, as a player shows it."""
    s = round(seconds)
    return f"{s // 60}:{s % 60:02d}"


def octave_name(pitch: int) -> str:
    return f"C{pitch // 12 - 1}"  # MIDI 60 is C4


@dataclass(frozen=True)
class Layer:
    """A band part under the piano: its name for the legend and its notes on the tick grid."""

    name: str
    notes: Sequence[Note]
    drums: bool = False


@dataclass(frozen=True)
class _Frame:
    left: int
    top: int
    right: int  # exclusive
    bottom: int  # exclusive
    seconds: float
    lo: int
    hi: int

    def x(self, seconds: float) -> float:
        return self.left + seconds * (self.right - self.left) / self.seconds

    def y(self, pitch: int) -> float:
        """Top edge of `pitch`'s row."""
        return self.top + (self.hi - pitch) * (self.bottom - self.top) / (self.hi - self.lo + 1)


def piano_roll(
    notes: Sequence[Note],
    width: int = BASE_WIDTH,
    height: int = BASE_HEIGHT,
    *,
    title: str | None = None,
    primer_end: float | None = None,
    parts: Sequence[Layer] = (),
) -> Image.Image:
    """The piece as an RGB image; `primer_end` (seconds) marks where a primer ends; `parts` are a
    band's, drawn under the piano."""
    scale = min(width / BASE_WIDTH, height / BASE_HEIGHT)
    font, title_font = _font(max(8, round(FONT_PX * scale))), _font(max(9, round(TITLE_PX * scale)), bold=True)
    pad = max(2, round(8 * scale))
    text_h = font.getbbox("C8 0123456789s")[3]
    label_w = round(font.getlength("C8")) + 2 * pad

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)

    pitched = [n for layer in parts if not layer.drums for n in layer.notes]
    seconds = max((n.end for n in [*notes, *pitched]), default=0) * V.TICK_SECONDS
    seconds = seconds if seconds > 0 else EMPTY_SECONDS
    lo = min([n.pitch - 2 for n in [*notes, *pitched]] + [DEFAULT_RANGE[0]])
    hi = max([n.pitch + 2 for n in [*notes, *pitched]] + [DEFAULT_RANGE[1]])
    lo, hi = max(lo, 0), min(hi, 127)
    top = max(title_font.getbbox("Ag")[3], text_h) + 2 * pad
    f = _Frame(label_w, top, width - pad * 2, height - text_h - 2 * pad - max(2, round(6 * scale)), seconds, lo, hi)
    row = (f.bottom - f.top) / (hi - lo + 1)
    draw.rectangle([f.left, f.top, f.right - 1, f.bottom - 1], fill=PLOT)

    # Octaves: a line under every C, its name level with its row.
    for c in range(lo + (-lo) % 12, hi + 1, 12):
        y_line = round(f.y(c) + row)
        if y_line < f.bottom - 1:
            draw.line([(f.left, y_line), (f.right - 1, y_line)], fill=GRID)
        # an octave at the very top or bottom keeps its label inside the frame, clear of the title and ticks
        y_label = min(max(f.y(c) + row / 2, f.top + text_h / 2), f.bottom - text_h / 2)
        draw.text((f.left - pad, y_label), octave_name(c), font=font, fill=TEXT, anchor="rm")

    # Time: a faint line and a labelled tick every round number of seconds.
    step = tick_step(seconds)
    tick_len = max(2, round(6 * scale))
    for i in range(int(seconds // step) + 1):
        x = round(f.x(i * step))
        if 0 < i * step < seconds:
            draw.line([(x, f.top), (x, f.bottom - 1)], fill=GRID)
        draw.line([(x, f.bottom), (x, f.bottom + tick_len)], fill=DIM_TEXT)
        label = f"{i * step} s"
        anchor = "ma" if x + font.getlength(label) / 2 <= width else "ra"  # the last label stays inside
        draw.text((x, f.bottom + tick_len + 1), label, font=font, fill=TEXT, anchor=anchor)
    draw.line([(f.left, f.bottom), (f.right - 1, f.bottom)], fill=DIM_TEXT)

    swatches = []  # (name, colour) for the legend
    for k, layer in enumerate(parts):
        colour = DRUM_COLOUR if layer.drums else PART_COLOURS[k % len(PART_COLOURS)]
        swatches.append((layer.name.lower(), colour))
        for n in layer.notes:
            x0 = round(f.x(n.start * V.TICK_SECONDS))
            if layer.drums:  # a short mark on the bottom strip, taller for louder hits
                h = max(2, round(row * (1 + 2 * n.velocity / 127)))
                draw.line([(x0, f.bottom - 2), (x0, f.bottom - 2 - h)], fill=colour)
                continue
            x1 = max(round(f.x(n.end * V.TICK_SECONDS)) - 1, x0 + 1)
            y0 = round(f.y(n.pitch))
            draw.rectangle([x0, y0, x1, max(round(f.y(n.pitch) + row) - 1, y0)], fill=colour)

    # Loud notes drawn last, on top of the soft ones they overlap.
    for n in sorted(notes, key=lambda n: n.velocity):
        x0 = round(f.x(n.start * V.TICK_SECONDS))
        x1 = max(round(f.x(n.end * V.TICK_SECONDS)) - 1, x0 + 1)
        y0 = round(f.y(n.pitch))
        y1 = max(round(f.y(n.pitch) + row) - 1, y0)
        draw.rectangle([x0, y0, x1, y1], fill=velocity_colour(n.velocity))

    if primer_end is not None and 0 <= primer_end <= seconds:
        x = min(round(f.x(primer_end)), f.right - 1)
        dash = max(3, round(8 * scale))
        for y in range(f.top, f.bottom, 2 * dash):
            draw.line([(x, y), (x, min(y + dash, f.bottom) - 1)], fill=PRIMER, width=max(1, round(2 * scale)))
        label = "primer ▸" if _has_glyph(font, "▸") else "primer >"
        at, anchor = (x - pad, f.top + pad), "ra"
        if draw.textbbox(at, label, font=font, anchor=anchor)[0] < f.left:  # too short a primer: right of it
            at, anchor = (x + pad, f.top + pad), "la"
        box = draw.textbbox(at, label, font=font, anchor=anchor)
        draw.rectangle([box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2], fill=BACKGROUND)  # legible over notes
        draw.text(at, label, font=font, fill=PRIMER, anchor=anchor)

    # Legend, top right: what the colours mean.
    ramp_w, ramp_h = round(90 * scale), max(4, round(12 * scale))
    loud_w = font.getlength("loud")
    ramp_right = round(f.right - loud_w - pad)
    ramp_left = ramp_right - ramp_w
    mid = top / 2
    for i in range(ramp_w):
        draw.line([(ramp_left + i, mid - ramp_h / 2), (ramp_left + i, mid + ramp_h / 2)], fill=_blend(i / (ramp_w - 1)))
    draw.text((ramp_left - pad, mid), "soft", font=font, fill=DIM_TEXT, anchor="rm")
    draw.text((ramp_right + pad, mid), "loud", font=font, fill=DIM_TEXT, anchor="lm")
    legend_left = ramp_left - pad - font.getlength("soft")
    if swatches:  # "piano" names the ramp; each part gets a square of its colour
        draw.text((legend_left - pad, mid), "piano", font=font, fill=DIM_TEXT, anchor="rm")
        legend_left -= pad + font.getlength("piano")
        for name, colour in reversed(swatches):
            legend_left -= 2 * pad
            draw.text((legend_left, mid), name, font=font, fill=DIM_TEXT, anchor="rm")
            legend_left -= font.getlength(name) + pad + ramp_h
            draw.rectangle([legend_left, mid - ramp_h / 2, legend_left + ramp_h, mid + ramp_h / 2], fill=colour)

    if title:
        room = legend_left - 3 * pad
        while len(title) > 1 and title_font.getlength(title) > room:  # never under the legend
            title = title[:-2] + "…"
        draw.text((pad, mid), title, font=title_font, fill=TEXT, anchor="lm")
    return img


def write_piano_roll(
    notes: Sequence[Note],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    primer_end: float | None = None,
    parts: Sequence[Layer] = (),
) -> None:
    piano_roll(notes, title=title, primer_end=primer_end, parts=parts).save(path, format="PNG", optimize=True)
