"""From a request to the files a user gets: compose (regenerating degenerate pieces), then write
the MIDI, the piano roll and the MP3. The same path serves the CLI and the job workers."""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from . import vocab as V
from .arrange import band_midi_of
from .arrangements import check_arrangement
from .controls import ATTRIBUTES as CONTROLS
from .controls import parse_level
from .errors import GeneratorError
from .params import GenerationRequest, SamplingParams
from .pianoroll import Layer, clock, write_piano_roll
from .postprocess import is_degenerate, postprocess, remove_long_pauses
from .render import RenderTimings, Tags, render_midi_file
from .tokenizer import Note, decode_notes, duration_seconds, notes_to_midi

MAX_TRIES = 3
RESEED = 1_000_003  # a regenerated piece gets seed + RESEED·attempt, recorded in its recipe


class RecipeError(GeneratorError):
    pass


@dataclass(frozen=True)
class Recipe:
    """Everything needed to compose the same piece again. `summary()` is one line of key=value
    pairs (shell-quoted where a value has spaces) that `Recipe.parse` reads back."""

    model: str
    checkpoint_sha256: str
    genre: str
    seed: int
    sampling: SamplingParams
    max_seconds: float | None = None
    max_new_tokens: int | None = None
    primer: str | None = None
    instrument: str = "piano"
    primer_seconds: float | None = None  # only this many seconds of the primer were continued
    primer_from: str = "end"  # taken from the primer's "start" or "end"
    arrangement: str = "solo"  # or "band" (generator.arrange); recipes from before it were solo
    # Where it was composed (device.Resolved.label): the same seed on another device or in another
    # precision may write another piece, so a recipe says so; it is composed again anywhere.
    device: str = "cpu"

    @classmethod
    def of(
        cls,
        request: GenerationRequest,
        model: str,
        checkpoint_sha256: str,
        instrument: str = "piano",
        primer: str | None = None,
        primer_seconds: float | None = None,
        primer_from: str = "end",
        arrangement: str = "solo",
        device: str = "cpu",
    ) -> Recipe:
        assert request.seed is not None, "a recipe needs the seed that was used"
        return cls(
            model,
            checkpoint_sha256,
            V.canonical_genre(request.genre),
            request.seed,
            request.sampling,
            request.max_seconds,
            request.max_new_tokens,
            primer,
            instrument,
            primer_seconds,
            primer_from,
            check_arrangement(arrangement),
            check_recipe_device(device),
        )

    def summary(self) -> str:
        s = self.sampling
        length = f"seconds={exact(self.max_seconds)}" if self.max_seconds else f"tokens={self.max_new_tokens}"
        parts = [
            f"model={shlex.quote(self.model)}",
            f"sha256={self.checkpoint_sha256[:12]}",
            f"genre={V.display_name(self.genre)}",
            f"seed={self.seed}",
            length,
            f"temperature={exact(s.temperature)}",
            f"top_k={s.top_k}",
            f"top_p={exact(s.top_p)}",
            f"topp_temperature={exact(s.topp_temperature)}",
            f"at_least_k={s.at_least_k}",
            f"rp_penalty={exact(s.rp_penalty)}",
            f"rp_restore_speed={exact(s.rp_restore_speed)}",
            f"max_hold={exact(s.max_hold)}",
            f"truncate={s.truncate}",
            *([f"bass={exact(s.bass)}"] if s.bass else []),  # a recipe without it reads as before
            *(f"{name}={level}" for name, level in s.controls.as_dict().items()),
            f"instrument={shlex.quote(self.instrument)}",
        ]
        if self.arrangement != "solo":  # a solo recipe reads as it did before band mode
            parts.append(f"arrangement={self.arrangement}")
        if self.device != "cpu":  # a recipe composed on the CPU reads as it did before GPUs
            parts.append(f"device={self.device}")
        if self.primer:
            parts.append(f"primer={shlex.quote(self.primer)}")
            if self.primer_seconds is not None:
                parts.append(f"primer_seconds={exact(self.primer_seconds)}")
            parts.append(f"primer_from={self.primer_from}")
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """A recipe from its `summary()` line (a leading 'recipe:' is allowed); RecipeError names
        what is missing or wrong. The checkpoint's sha256 comes back as the summary's prefix."""
        text = text.strip().removeprefix("recipe:")
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise RecipeError(f"cannot read the recipe: {exc}") from None
        values: dict[str, str] = {}
        for word in words:
            key, eq, value = word.partition("=")
            if not eq:
                raise RecipeError(f"recipe part {word!r} is not name=value")
            if key not in RECIPE_KEYS:
                raise RecipeError(f"unknown recipe part {key!r}; a recipe has {', '.join(RECIPE_KEYS)}")
            values[key] = value
        for key in ("genre", "seed", *SAMPLING_KEYS):
            if key not in values:
                raise RecipeError(f"the recipe has no {key}=; paste the whole recipe line")
        if ("seconds" in values) == ("tokens" in values):
            raise RecipeError("the recipe needs seconds= or tokens= (one of them)")

        def number(key: str, kind: type = float):
            try:
                return kind(values[key])
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise RecipeError(f"recipe {key}={values[key]!r} is not {what}") from None

        types = {f.name: f.type for f in fields(SamplingParams)}
        sampling = {
            k: values[k] if k == "truncate" else number(k, int if types[k] in ("int", int) else float)
            for k in SAMPLING_KEYS
        }
        sampling |= {k: parse_level(k, values[k]) for k in CONTROLS if k in values}
        if "bass" in values:
            sampling["bass"] = number("bass")
        return cls(
            model=values.get("model", ""),
            checkpoint_sha256=values.get("sha256", ""),
            genre=V.canonical_genre(values["genre"]),
            seed=number("seed", int),
            sampling=SamplingParams(**sampling),
            max_seconds=number("seconds") if "seconds" in values else None,
            max_new_tokens=number("tokens", int) if "tokens" in values else None,
            primer=values.get("primer") or None,
            instrument=values.get("instrument", "piano"),
            primer_seconds=number("primer_seconds") if "primer_seconds" in values else None,
            primer_from=values.get("primer_from", "end"),
            arrangement=_recipe_arrangement(values.get("arrangement", "solo")),
            device=_recipe_device(values.get("device", "cpu")),
        )

    def as_dict(self) -> dict:
        return asdict(self)


SAMPLING_KEYS = (
    "temperature",
    "top_k",
    "top_p",
    "topp_temperature",
    "at_least_k",
    "rp_penalty",
    "rp_restore_speed",
    "max_hold",
    "truncate",
)
RECIPE_KEYS = (
    "model",
    "sha256",
    "genre",
    "seed",
    "seconds",
    "tokens",
    *SAMPLING_KEYS,
    "bass",
    *CONTROLS,
    "instrument",
    "arrangement",
    "device",
    "primer",
    "primer_seconds",
    "primer_from",
)


RECIPE_DEVICE = re.compile(r"cpu|cuda/(fp32|bf16|fp16)")


def check_recipe_device(label: str) -> str:
    """A device as a recipe names it: cpu, or cuda/ and the precision (device.Resolved.label)."""
    if not RECIPE_DEVICE.fullmatch(label):
        raise RecipeError(f"device must be cpu or cuda/fp32, cuda/bf16 or cuda/fp16, got {label!r}")
    return label


def _recipe_device(value: str) -> str:
    try:
        return check_recipe_device(value)
    except RecipeError as exc:
        raise RecipeError(f"recipe {exc}") from None


def _recipe_arrangement(value: str) -> str:
    try:
        return check_arrangement(value)
    except GeneratorError as exc:
        raise RecipeError(f"recipe {exc}") from None


def exact(x: float) -> str:
    """A number as short as it reads back the same: 0.8, 30, 0.123456789."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def track_title(genre: str, number: int) -> str:
    return f"{V.display_name(genre).capitalize()} #{number}"


def compose(
    model,
    requests: Sequence[GenerationRequest],
    progress: Callable[[int, int, float], None] | None = None,
    tries: int = MAX_TRIES,
):
    """Generate every request; a piece that comes out degenerate (one key hammered) is composed
    again with a new seed, up to `tries` times, before anyone hears it."""
    from .decoding import generate

    results = list(generate(model, requests, progress))
    for attempt in range(1, tries):
        again = [regenerate(g.request, g.new_tokens, attempt, tries) for g in results]
        redo = {i: r for i, r in enumerate(again) if r is not None}
        if not redo:
            break
        for i, g in zip(redo, generate(model, list(redo.values()))):
            results[i] = g
    return results


def regenerate(
    request: GenerationRequest, new_tokens: Sequence[int], attempt: int, tries: int = MAX_TRIES
) -> GenerationRequest | None:
    """The one regeneration policy (the CLI and both job backends): a piece that came out
    degenerate in its `attempt`-th composition (1, 2, …) is composed again with the next seed,
    until `tries` compositions are spent; None keeps what was composed."""
    if attempt >= tries or not is_degenerate(new_tokens):
        return None
    return replace(request, seed=(request.seed or 0) + RESEED * attempt)


@dataclass(frozen=True)
class TrackFiles:
    mp3: Path
    midi: Path
    png: Path
    seconds: float
    notes: int
    timings: RenderTimings


def write_track(
    tokens: Sequence[int],
    stem: str | os.PathLike[str],
    tags: Tags,
    program: int = 0,
    soundfont: str | os.PathLike[str] | None = None,
    *,
    seed: int | None = None,
    primer_until: int | None = None,
    arrangement: str = "solo",
) -> TrackFiles:
    """Clean the piece up as the reference does, then write stem.mid, stem.png and stem.mp3.

    `seed` goes in the piano roll's title and seeds a band's choices; `primer_until` is where in
    `tokens` a primer ends (the first composed token), marked on the roll; `arrangement` "band"
    adds the genre's band (`generator.arrange`) around the piano."""
    stem = Path(stem)
    tokens = list(tokens)
    notes = decode_notes(postprocess(tokens))
    mid, png, mp3 = stem.with_suffix(".mid"), stem.with_suffix(".png"), stem.with_suffix(".mp3")
    layers: list[Layer] = []
    if check_arrangement(arrangement) == "band":
        midi = band_midi_of(notes, tags.genre, seed or 0, program)
        layers = [Layer(i.name, [_on_grid(n) for n in i.notes], i.is_drum) for i in midi.instruments[1:]]
    else:
        midi = notes_to_midi(notes, program=program)
    midi.write(str(mid))
    primer_end = duration_seconds(remove_long_pauses(tokens[:primer_until])) if primer_until else None
    write_piano_roll(notes, png, title=roll_title(tags, notes, seed), primer_end=primer_end, parts=layers)
    timings = render_midi_file(mid, mp3, tags, soundfont=soundfont)
    return TrackFiles(mp3, mid, png, timings.audio_seconds, len(notes), timings)


def _on_grid(n) -> Note:
    """A pretty_midi note of a band part as the piano roll draws notes, on the tick grid."""
    start = round(n.start / V.TICK_SECONDS)
    return Note(start, max(round(n.end / V.TICK_SECONDS), start + 1), n.pitch, n.velocity)


def roll_title(tags: Tags, notes: Sequence[Note], seed: int | None = None) -> str:
    """'Ambient · seed 42 · 0:30'; without a seed the track's own title ('Ambient #12 · 0:30')."""
    length = clock(max((n.end for n in notes), default=0) * V.TICK_SECONDS)
    if seed is None or not tags.genre:
        return f"{tags.title} · {length}"
    return f"{V.display_name(tags.genre).capitalize()} · seed {seed} · {length}"


@dataclass(frozen=True)
class RenderedTrack:
    """A track's files as bytes, so a render process can hand them back without a shared disk."""

    mp3: bytes
    midi: bytes
    png: bytes
    seconds: float
    notes: int


def render_track(
    tokens: Sequence[int],
    tags: Tags,
    program: int = 0,
    soundfont: str | os.PathLike[str] | None = None,
    *,
    seed: int | None = None,
    primer_until: int | None = None,
    arrangement: str = "solo",
) -> RenderedTrack:
    """`write_track` into a scratch directory that is gone when this returns."""
    with tempfile.TemporaryDirectory(prefix="melomania-track-") as tmp:
        files = write_track(
            tokens,
            Path(tmp) / "track",
            tags,
            program,
            soundfont,
            seed=seed,
            primer_until=primer_until,
            arrangement=arrangement,
        )
        return RenderedTrack(
            files.mp3.read_bytes(), files.midi.read_bytes(), files.png.read_bytes(), files.seconds, files.notes
        )
