"""Attribute controls: a few tokens after the genre token that say how dense, how loud and how
thick a piece is (MuseCoco/FIGARO-style attribute conditioning).

A small model learns "sounds like ambient" from one genre token only loosely, but follows coarse,
measurable controls closely: each training window is prefixed with the bins of its own notes per
second, mean velocity and polyphony, and at composing time the genre's preset (or the user) asks
for the bins that genre typically has. An "unknown" bin is dropped in at random during training,
so the model also composes with any control left open.

Pure Python (no torch): the bots validate control words with it. The published checkpoint has no
control vocabulary; ours declare theirs (`ControlSpec`) and their ids follow the event vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import vocab as V
from .errors import GeneratorError

ATTRIBUTES: tuple[str, ...] = ("density", "loudness", "polyphony")
N_BINS = 5  # per attribute; one more id per attribute means "unknown"
LEVELS: tuple[str, ...] = ("very low", "low", "medium", "high", "very high")
# Words people type, per attribute, for each bin (`/compose ambient sparse soft`, `--density low`).
WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "density": (("very sparse",), ("sparse",), ("moderate",), ("busy", "dense"), ("very busy", "very dense")),
    "loudness": (("very soft", "pp"), ("soft", "gentle"), ("mf",), ("loud",), ("very loud", "ff")),
    "polyphony": (("very thin",), ("thin",), ("full",), ("thick", "rich"), ("very thick",)),
}
UNITS = {"density": "notes/s", "loudness": "mean MIDI velocity", "polyphony": "notes sounding"}
# Where a training window comes from: a real recording or score, or a piece our realisers wrote
# (training/jazz.py, training/ambient.py). Calm holds both, and they sound nothing alike: told
# apart, the model can learn the real clips fully without blurring the realised ambient it composes.
SOURCES: tuple[str, ...] = ("real", "realised")
# Bin edges between the five levels, the pooled quintiles of the training windows (genres weighted
# equally), so every bin is seen about as often in training.
DEFAULT_EDGES: dict[str, tuple[float, ...]] = {
    "density": (3.0, 6.8, 9.3, 13.0),
    "loudness": (47.0, 61.0, 70.0, 78.0),
    "polyphony": (3.1, 3.75, 4.5, 5.8),
}


class ControlError(GeneratorError):
    """A control level or word that does not exist, or controls asked of a model without them."""


@dataclass(frozen=True)
class Attributes:
    """What a stretch of events measures: notes per second, mean MIDI velocity of the notes,
    and polyphony (mean number of keys down at each onset, the struck notes included)."""

    density: float
    loudness: float
    polyphony: float

    def get(self, name: str) -> float:
        return getattr(self, name)


@dataclass(frozen=True)
class Controls:
    """The bin (0 … N_BINS-1) asked for each attribute; None leaves it to the model."""

    density: int | None = None
    loudness: int | None = None
    polyphony: int | None = None

    def __post_init__(self) -> None:
        for name in ATTRIBUTES:
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value < N_BINS):
                raise ControlError(
                    f"{name} must be a level from 0 to {N_BINS - 1} ({', '.join(LEVELS)}), got {value!r}"
                )

    def get(self, name: str) -> int | None:
        return getattr(self, name)

    @property
    def any(self) -> bool:
        return any(self.get(a) is not None for a in ATTRIBUTES)

    def merged(self, over: Controls) -> Controls:
        """These controls with every level `over` sets replacing ours."""
        return Controls(**{a: over.get(a) if over.get(a) is not None else self.get(a) for a in ATTRIBUTES})

    def words(self) -> str:
        """'very sparse, soft, thick': the levels as the words people type."""
        return ", ".join(WORDS[a][b][0] for a in ATTRIBUTES if (b := self.get(a)) is not None) or "none"

    def describe(self) -> str:
        parts = [f"{a} {LEVELS[b]}" for a in ATTRIBUTES if (b := self.get(a)) is not None]
        return ", ".join(parts) or "none"

    def as_dict(self) -> dict[str, int]:
        return {a: b for a in ATTRIBUTES if (b := self.get(a)) is not None}

    @classmethod
    def from_dict(cls, raw: Mapping[str, object] | None) -> Controls:
        raw = dict(raw or {})
        unknown = set(raw) - set(ATTRIBUTES)
        if unknown:
            raise ControlError(f"unknown control {sorted(unknown)[0]!r}; controls are {', '.join(ATTRIBUTES)}")
        return cls(**{k: parse_level(k, v) for k, v in raw.items()})


def parse_level(attribute: str, value: object) -> int | None:
    """A level given as 0–4, 'low', 'very high', or one of the attribute's words ('sparse')."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ControlError(f"{attribute} must be one of: {', '.join(LEVELS)}")
    if isinstance(value, int):
        Controls(**{attribute: value})
        return value
    text = str(value).strip().lower().replace("-", " ").replace("_", " ")
    if text.isdigit():
        return parse_level(attribute, int(text))
    if text in LEVELS:
        return LEVELS.index(text)
    for level, words in enumerate(WORDS[attribute]):
        if text in words:
            return level
    valid = ", ".join(LEVELS) + " or " + ", ".join(w for ws in WORDS[attribute] for w in ws)
    raise ControlError(f"{attribute} {value!r} is not a level; use {valid}")


def word_controls(words: Iterable[str]) -> tuple[Controls, list[str]]:
    """Control words found in `words` ('sparse', 'very soft', 'thick'), and the words left over.
    Two-word phrases are matched before single words."""
    words = list(words)
    found: dict[str, int] = {}
    rest: list[str] = []
    lookup = {w: (a, level) for a, levels in WORDS.items() for level, ws in enumerate(levels) for w in ws}
    i = 0
    while i < len(words):
        pair = " ".join(words[i : i + 2]).lower()
        if i + 1 < len(words) and pair in lookup:
            a, level = lookup[pair]
            found[a] = level
            i += 2
            continue
        single = words[i].lower()
        if single in lookup:
            a, level = lookup[single]
            found[a] = level
        else:
            rest.append(words[i])
        i += 1
    return Controls(**found), rest


# --- measuring -------------------------------------------------------------------------------


def measure(tokens: Sequence[int]) -> Attributes | None:
    """The attributes of a stretch of event tokens (other ids are skipped); None without notes
    or without time. A note held from before the stretch is not known to be down."""
    velocity_bin = V.velocity_to_bin(V.DEFAULT_VELOCITY)
    down: set[int] = set()
    clock = 0
    notes = 0
    velocity_sum = 0
    onset_sizes: list[int] = []
    pending_onset = False
    for t in tokens:
        if V.is_time_shift(t):
            if pending_onset:
                onset_sizes.append(len(down))
                pending_onset = False
            clock += V.shift_ticks(t)
        elif V.is_velocity(t):
            velocity_bin = t - V.VELOCITY
        elif V.is_note_on(t):
            down.add(t - V.NOTE_ON)
            notes += 1
            velocity_sum += V.bin_to_velocity(velocity_bin)
            pending_onset = True
        elif V.is_note_off(t):
            down.discard(t - V.NOTE_OFF)
    if pending_onset:
        onset_sizes.append(len(down))
    if notes == 0 or clock == 0:
        return None
    seconds = clock * V.TICK_SECONDS
    return Attributes(
        density=notes / seconds,
        loudness=velocity_sum / notes,
        polyphony=sum(onset_sizes) / len(onset_sizes),
    )


# --- the vocabulary --------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlSpec:
    """A checkpoint's control vocabulary: which attributes, their bin edges, and the first id.

    Ids: first + index(attribute) * (N_BINS + 1) + bin, the last id of each attribute "unknown".
    The prefix is always every attribute in order, right after the genre token. A spec with
    `sources` adds one more token after them: the source's index, or len(sources) for "unknown";
    which source each genre composes as is the checkpoint's choice (`compose_as`), not the user's.
    A genre in `split` has a genre token of its own for its real pieces (ids last), so that its
    real and realised pieces are told apart from the first token on: the published token stays
    the realised pieces' (and the unknown's). A split needs no source token: the dataset says
    which pieces are real, and the prefix after the genre token stays what it was."""

    attributes: tuple[str, ...] = ATTRIBUTES
    edges: Mapping[str, tuple[float, ...]] = None  # type: ignore[assignment]
    first: int = V.VOCAB_SIZE
    sources: tuple[str, ...] = ()
    compose_as: Mapping[str, str] = None  # type: ignore[assignment]  # genre -> source
    split: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.edges is None:
            object.__setattr__(self, "edges", {a: DEFAULT_EDGES[a] for a in self.attributes})
        # keyed by canonical genre, whatever alias a config or a checkpoint wrote
        object.__setattr__(self, "compose_as", {V.canonical_genre(g): s for g, s in (self.compose_as or {}).items()})
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "split", tuple(V.canonical_genre(g) for g in self.split))
        if self.split and self.sources and "real" not in self.sources:
            raise ControlError("a genre split by source needs the real source")
        for s in self.sources:
            if s not in SOURCES:
                raise ControlError(f"unknown source {s!r}; sources are {', '.join(SOURCES)}")
        for genre, s in self.compose_as.items():
            if s not in self.sources:
                raise ControlError(f"{genre} composes as source {s!r}, which this vocabulary lacks")
        for a in self.attributes:
            if a not in ATTRIBUTES:
                raise ControlError(f"unknown control attribute {a!r}")
            e = tuple(float(x) for x in self.edges[a])
            if len(e) != N_BINS - 1 or list(e) != sorted(e):
                raise ControlError(f"{a} needs {N_BINS - 1} rising bin edges, got {e}")

    @property
    def size(self) -> int:
        return len(self.attributes) * (N_BINS + 1) + (len(self.sources) + 1 if self.sources else 0) + len(self.split)

    @property
    def length(self) -> int:
        """Tokens in the prefix after the genre token."""
        return len(self.attributes) + (1 if self.sources else 0)

    def bin_of(self, attribute: str, value: float) -> int:
        edges = self.edges[attribute]
        return sum(float(value) >= e for e in edges)

    def bins(self, attributes: Attributes | None) -> Controls:
        if attributes is None:
            return Controls()
        return Controls(**{a: self.bin_of(a, attributes.get(a)) for a in self.attributes})

    def tokens(self, controls: Controls, source: str | None = None) -> list[int]:
        """The prefix after the genre token; `source` None (or a spec without sources) is unknown."""
        out = []
        for i, a in enumerate(self.attributes):
            b = controls.get(a)
            out.append(self.first + i * (N_BINS + 1) + (N_BINS if b is None else b))
        if self.sources:
            out.append(self._source_first + (len(self.sources) if source is None else self.sources.index(source)))
        return out

    def genre_token(self, genre: str, source: str | None) -> int:
        """The first token of a `genre` piece from `source`: the published genre token, or the
        split genre's own token for its real pieces."""
        genre = V.canonical_genre(genre)
        if source == "real" and genre in self.split:
            return self._split_first + self.split.index(genre)
        return V.genre_token(genre)

    def prefix(self, genre: str, controls: Controls) -> list[int]:
        """The prompt's prefix for composing `genre`: its token, the controls, and the source the
        checkpoint composes that genre as."""
        genre = V.canonical_genre(genre)
        source = self.compose_as.get(genre)
        return [self.genre_token(genre, source), *self.tokens(controls, source)]

    @property
    def _source_first(self) -> int:
        return self.first + len(self.attributes) * (N_BINS + 1)

    @property
    def _split_first(self) -> int:
        return self._source_first + (len(self.sources) + 1 if self.sources else 0)

    def decode(self, tokens: Sequence[int]) -> Controls:
        """The controls a prefix holds (the inverse of `tokens`)."""
        found = {}
        for i, a in enumerate(self.attributes):
            b = tokens[i] - self.first - i * (N_BINS + 1)
            if not 0 <= b <= N_BINS:
                raise ControlError(f"token {tokens[i]} is not a {a} control")
            found[a] = None if b == N_BINS else b
        return Controls(**found)

    def decode_source(self, tokens: Sequence[int]) -> str | None:
        """The source a prefix holds (None: unknown)."""
        if not self.sources:
            raise ControlError("this control vocabulary has no source token")
        i = tokens[len(self.attributes)] - self._source_first
        if not 0 <= i <= len(self.sources):
            raise ControlError(f"token {tokens[len(self.attributes)]} is not a source control")
        return None if i == len(self.sources) else self.sources[i]

    def range_of(self, attribute: str, level: int) -> str:
        """'3.5–5.5 notes/s': what a level means, for tables and help."""
        e = self.edges[attribute]
        lo = e[level - 1] if level > 0 else None
        hi = e[level] if level < len(e) else None
        unit = UNITS[attribute]
        if lo is None:
            return f"< {hi:g} {unit}"
        if hi is None:
            return f"≥ {lo:g} {unit}"
        return f"{lo:g}–{hi:g} {unit}"

    def as_dict(self) -> dict:
        out = {
            "attributes": list(self.attributes),
            "edges": {a: list(self.edges[a]) for a in self.attributes},
            "first": self.first,
        }
        if self.sources:  # absent from older checkpoints, whose ids are unchanged
            out |= {"sources": list(self.sources), "compose_as": dict(self.compose_as)}
        if self.split:
            out["split"] = list(self.split)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping) -> ControlSpec:
        try:
            attributes = tuple(raw["attributes"])
            return cls(
                attributes,
                {a: tuple(raw["edges"][a]) for a in attributes},
                int(raw.get("first", V.VOCAB_SIZE)),
                tuple(raw.get("sources", ())),
                dict(raw.get("compose_as", {})),
                tuple(raw.get("split", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ControlError(f"bad control vocabulary: {exc}") from None
