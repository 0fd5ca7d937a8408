"""What a caller asks the generator for, validated, with no torch import (the bots use these)."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from . import vocab as V
from .controls import ATTRIBUTES as CONTROL_FIELDS
from .controls import LEVELS, Controls
from .controls import N_BINS as N_LEVELS
from .errors import GeneratorError, SamplingError

MAX_TEMPERATURE = 10.0
MAX_RESTORE_SPEED = 100.0
MAX_HOLD_SECONDS = 60.0
MAX_BASS = 4.0
TRUNCATE = ("all", "pitches")
LEVELS_TEXT = "a level from 0 to 4 (" + ", ".join(LEVELS) + ")"


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling values; invalid values raise SamplingError naming the range."""

    temperature: float = 1.0
    top_k: int = 40  # 0 turns top-k off
    top_p: float = 0.99
    topp_temperature: float = 1.0
    at_least_k: int = 1  # never sample from fewer than this many tokens
    rp_penalty: float = 0.05  # 0 turns the repetition penalty off
    rp_restore_speed: float = 0.7  # penalty restored per second of music
    max_hold: float = 6.0  # seconds a key may stay down before it is released; 0 turns this off
    truncate: str = "all"  # what top-k and top-p cut: "all" events (the reference) or only "pitches"
    # Added to the logits of every note-on at MIDI 48 (C3) and below, which the temperature then
    # divides as it does the model's own: above 0 brings the bass line forward, below 0 thins it;
    # 0 leaves the register to the model. A small model drifts up the keyboard (ours struck the
    # bass at 9-16 % of jazz onsets where the data has 19 %).
    bass: float = 0.0
    # Attribute controls (generator/controls.py), levels 0-4 from very low to very high; None
    # leaves the attribute to the model. Only checkpoints with a control vocabulary follow them.
    density: int | None = None  # notes per second
    loudness: int | None = None  # mean velocity
    polyphony: int | None = None  # notes sounding at once

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, valid: str, example: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise SamplingError(f"{name} must be {valid}, got {value!r} (for example {name}={example})")

        check(
            _real(self.temperature) and 0 < self.temperature <= MAX_TEMPERATURE,
            "temperature",
            f"more than 0 and at most {MAX_TEMPERATURE:g}",
            "1.0",
        )
        check(
            _whole(self.top_k) and 0 <= self.top_k <= V.VOCAB_SIZE,
            "top_k",
            f"a whole number from 0 (off) to {V.VOCAB_SIZE}",
            "40",
        )
        check(_real(self.top_p) and 0 < self.top_p <= 1, "top_p", "in (0, 1]", "0.95")
        check(
            _real(self.topp_temperature) and 0 < self.topp_temperature <= MAX_TEMPERATURE,
            "topp_temperature",
            f"more than 0 and at most {MAX_TEMPERATURE:g}",
            "1.0",
        )
        check(
            _whole(self.at_least_k) and 1 <= self.at_least_k <= V.VOCAB_SIZE,
            "at_least_k",
            f"a whole number from 1 to {V.VOCAB_SIZE}",
            "1",
        )
        check(_real(self.rp_penalty) and 0 <= self.rp_penalty <= 1, "rp_penalty", "from 0 (off) to 1", "0.05")
        check(
            _real(self.rp_restore_speed) and 0 <= self.rp_restore_speed <= MAX_RESTORE_SPEED,
            "rp_restore_speed",
            f"from 0 to {MAX_RESTORE_SPEED:g}",
            "0.7",
        )
        check(
            _real(self.max_hold) and 0 <= self.max_hold <= MAX_HOLD_SECONDS,
            "max_hold",
            f"from 0 (off) to {MAX_HOLD_SECONDS:g} seconds",
            "6",
        )
        check(
            _real(self.bass) and -MAX_BASS <= self.bass <= MAX_BASS,
            "bass",
            f"from {-MAX_BASS:g} to {MAX_BASS:g} (0: the model's own register)",
            "0.5",
        )
        check(self.truncate in TRUNCATE, "truncate", " or ".join(f'"{t}"' for t in TRUNCATE), '"pitches"')
        for name in CONTROL_FIELDS:
            value = getattr(self, name)
            check(value is None or (_whole(value) and 0 <= value < N_LEVELS), name, LEVELS_TEXT, "1")

    @property
    def controls(self) -> Controls:
        return Controls(self.density, self.loudness, self.polyphony)


def _real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _whole(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# Without a token budget a piece asked for in seconds could, in principle, never advance time;
# no real piano texture needs more than this many events per second of music.
MAX_TOKENS_PER_SECOND = 100
MAX_NEW_TOKENS = 100_000
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class GenerationRequest:
    """What to compose. Give a length in new tokens, in seconds of music, or both (first wins)."""

    genre: str
    sampling: SamplingParams = SamplingParams()
    max_new_tokens: int | None = None
    max_seconds: float | None = None
    seed: int | None = None
    primer: tuple[int, ...] = ()  # event tokens to continue (no genre token)
    piano_range: bool = True

    def __post_init__(self) -> None:
        V.canonical_genre(self.genre)  # raises UnknownGenreError with the valid names
        if self.max_new_tokens is None and self.max_seconds is None:
            raise GeneratorError("say how long the piece should be: max_new_tokens or max_seconds")
        if self.max_new_tokens is not None and not (
            isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS
        ):
            raise GeneratorError(
                f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, got {self.max_new_tokens!r}"
            )
        if self.max_seconds is not None and not (
            isinstance(self.max_seconds, (int, float)) and 0 < self.max_seconds <= MAX_SECONDS
        ):
            raise GeneratorError(
                f"max_seconds must be more than 0 and at most {MAX_SECONDS:g}, got {self.max_seconds!r}"
            )
        if self.seed is not None and not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise GeneratorError(f"seed must be a whole number from 0 to 2**63-1, got {self.seed!r}")
        bad = [t for t in self.primer if not 0 <= t < V.END]
        if bad:
            raise GeneratorError(f"primer tokens must be events 0–{V.END - 1}, got {bad[0]}")

    @property
    def token_budget(self) -> int:
        budget = MAX_NEW_TOKENS if self.max_new_tokens is None else self.max_new_tokens
        if self.max_seconds is not None:
            budget = min(budget, max(64, math.ceil(self.max_seconds * MAX_TOKENS_PER_SECOND)))
        return budget


# --- what a user may change, and within which ranges ---------------------------------------------


class RangeError(SamplingError):
    """A typed value that is no number (`number` False) or lies outside its range; the fields let
    a front end say so in the user's own language."""

    def __init__(self, message: str, name: str, shown: str, number: bool) -> None:
        super().__init__(message)
        self.name, self.shown, self.number = name, shown, number


@dataclass(frozen=True)
class Range:
    """A friendly range for a value a person types (chat, buttons, Discord options, the CLI)."""

    low: float
    high: float
    whole: bool = False
    example: str = ""

    @property
    def ends(self) -> tuple[str, str]:
        """The lowest and highest value, as a person types them."""
        fmt = (lambda x: str(int(x))) if self.whole else (lambda x: f"{x:g}")
        return fmt(self.low), fmt(self.high)

    @property
    def bounds(self) -> str:
        return "from {} to {}".format(*self.ends)

    def clamp(self, value: float) -> float:
        return min(self.high, max(self.low, value))

    def check(self, name: str, raw: str | float | int) -> float | int:
        """`raw` (typed text or a number) as a value in range; RangeError naming the range."""
        try:
            if isinstance(raw, str):
                value: float | int = int(raw) if self.whole else float(raw)
            elif isinstance(raw, bool) or not isinstance(raw, (int, float)) or (self.whole and raw != int(raw)):
                raise ValueError
            else:
                value = int(raw) if self.whole else float(raw)
        except (ValueError, OverflowError):
            kind = "a whole number" if self.whole else "a number"
            shown = repr(raw[:20] if isinstance(raw, str) else raw)
            raise RangeError(
                f"{name} must be {kind} {self.bounds}, not {shown} (for example {name}={self.example})",
                name,
                shown,
                number=False,
            ) from None
        if not (self.low <= value <= self.high):
            shown = raw[:20] if isinstance(raw, str) else f"{raw:g}"
            raise RangeError(
                f"{name} must be {self.bounds}, not {shown} (for example {name}={self.example})",
                name,
                shown,
                number=True,
            )
        return value


# The one place a person's ranges live: the chat grammar, the buttons (🔥 ❄️), Discord's option
# types and the CLI all read these. The generator itself accepts wider ones (SamplingParams).
RANGES: dict[str, Range] = {
    "temperature": Range(0.1, 2.0, example="0.9"),
    "seconds": Range(5, 180, example="60"),
    "seed": Range(0, 2**31 - 1, whole=True, example="42"),
    "top_k": Range(0, 200, whole=True, example="40"),
    "top_p": Range(0.05, 1.0, example="0.95"),
    "at_least_k": Range(1, 50, whole=True, example="3"),
    "rp_penalty": Range(0.0, 1.0, example="0.05"),
    "rp_restore_speed": Range(0.0, 10.0, example="0.7"),
}


def draw_seed() -> int:
    """The one place a seed is drawn for a piece that was not given one (then recorded with it)."""
    return secrets.randbelow(2**31)


@dataclass(frozen=True)
class Overrides:
    """A person's changes to the genre preset (None: the preset's value). Built at the edge
    (chat, CLI), stored with the job as is, and checked once, at admission, by `validated`."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    topp_temperature: float | None = None
    at_least_k: int | None = None
    rp_penalty: float | None = None
    rp_restore_speed: float | None = None
    max_hold: float | None = None
    truncate: str | None = None
    bass: float | None = None
    density: int | None = None
    loudness: int | None = None
    polyphony: int | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def validated(self) -> Overrides:
        """Itself, every value checked: a person's range where there is one, the generator's
        otherwise; SamplingError names the range."""
        for name, value in self.given().items():
            if name in RANGES:
                RANGES[name].check(name, value)
        SamplingParams(**self.given())
        return self

    @property
    def controls(self) -> Controls:
        return Controls(self.density, self.loudness, self.polyphony)

    def without_controls(self) -> Overrides:
        return replace(self, **{name: None for name in CONTROL_FIELDS})

    def resolve(self, genre: str, presets: Mapping[str, SamplingParams] | None = None) -> SamplingParams:
        """The genre's preset with these values in its place."""
        return preset_sampling(genre, presets, **self.given())

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Overrides:
        """Stored values (a job's request, a track's recipe) as overrides; names this version no
        longer knows are dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    @classmethod
    def recorded(cls, data: Mapping[str, Any] | None) -> Overrides:
        """A composed track's record of every sampling value, as overrides for its children. A
        value the record lacks (kept before that value existed) is the generator's default, which
        the track was composed with, never today's preset: an old jazz track rerolled hotter
        keeps the register it had."""
        return cls.from_json(asdict(SamplingParams()) | dict(data or {}))


# Per-genre defaults, tuned as the reference tunes them for its 103M model; a checkpoint may carry
# its own (a small model wants other temperatures), and a user's own values override either.
GENRE_PRESETS: dict[str, SamplingParams] = {
    "classic": SamplingParams(temperature=1.1),
    "jazz": SamplingParams(temperature=0.95),
    "calm": SamplingParams(temperature=0.9),
    "pop": SamplingParams(temperature=1.0),
}


def preset_sampling(
    genre: str, presets: Mapping[str, SamplingParams] | None = None, **overrides: float | int | str | None
) -> SamplingParams:
    """The genre's preset (the model's own `presets` where it has one for the genre, else the
    reference's) with every value the user gave (not None) replacing the preset's."""
    genre = V.canonical_genre(genre)
    base = (presets or {}).get(genre) or GENRE_PRESETS[genre]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def presets_from(raw: Mapping[str, Mapping[str, float | int]] | None) -> dict[str, SamplingParams]:
    """Presets stored with a checkpoint ({genre: {field: value}}) as SamplingParams; each value
    is checked, so a bad file fails at load, not at a user's request."""
    return {V.canonical_genre(g): SamplingParams(**dict(values)) for g, values in (raw or {}).items()}
