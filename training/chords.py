"""Chord symbols and the piano their notes are placed on: shared by the jazz and ambient realisers.

`parse_chord` reads the spellings of lead sheets and of the parkR and WJD tables (`Cm7b5`, `F#7alt`,
`Bbmaj7/D`, `A79b13`) into a `Chord`: a root and its intervals. `fold_into_piano` and
`one_strike_per_key` turn a realiser's notes into ones a piano can play.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from generator.errors import GeneratorError

LOWEST_PITCH, HIGHEST_PITCH = 21, 96


class ChordSymbolError(GeneratorError):
    """A chord symbol whose root (or slash bass) is not a note name."""


_NOTE_PCS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ROOT = re.compile(r"([A-G])([#b♯♭]?)")
_NO_CHORD = frozenset({"NC", "N.C.", "N.C", "n", "X"})
# Quality words, each before any word that begins it ("min" before "mi" before "m"). Case matters: M is
# major, m minor.
_WORDS = (
    ("maj", "M"),
    ("min", "m"),
    ("dim", "o"),
    ("aug", "+"),
    ("sus", "sus"),
    ("alt", "alt"),
    ("add", "add"),
    ("ma", "M"),
    ("mi", "m"),
    ("M", "M"),
    ("j", "M"),
    ("^", "M"),
    ("Δ", "M"),
    ("m", "m"),
    ("-", "m"),
    ("o", "o"),
    ("°", "o"),
    ("h", "h"),
    ("ø", "h"),
    ("+", "+"),
)
_NUMBERS = ("13", "11", "9", "7", "6", "5", "4", "3", "2")
_TENSION_DEGREES = {2: 2, 4: 5, 9: 2, 11: 5, 13: 9}  # semitones above the root


@dataclass(frozen=True)
class Chord:
    """A parsed chord symbol: the root's pitch class and the chord's intervals above it."""

    root: int
    third: int | None = 4  # 3 minor, 4 major, None suspended
    fifth: int | None = 7  # 6 flat, 7 perfect, 8 sharp, None when left open (7alt)
    seventh: int | None = None  # 9 diminished, 10 minor, 11 major; a plain 6th is a tension
    tensions: frozenset[int] = frozenset()  # semitones above the root: 1 b9, 2 9, 3 #9, 5 11, 6 #11, 8 b13, 9 13
    bass: int | None = None  # slash bass pitch class

    @property
    def intervals(self) -> frozenset[int]:
        parts = {0, self.third, self.fifth, self.seventh} | self.tensions
        return frozenset(i for i in parts if i is not None)

    @property
    def pitch_classes(self) -> frozenset[int]:
        pcs = {(self.root + i) % 12 for i in self.intervals}
        return frozenset(pcs | ({self.bass} if self.bass is not None else set()))

    @property
    def bass_pc(self) -> int:
        return self.root if self.bass is None else self.bass

    @property
    def is_diminished_seventh(self) -> bool:
        return self.third == 3 and self.fifth == 6 and self.seventh == 9

    @property
    def is_dominant(self) -> bool:
        return self.third in (4, None) and self.seventh == 10

    def transposed(self, semitones: int) -> Chord:
        bass = None if self.bass is None else (self.bass + semitones) % 12
        return replace(self, root=(self.root + semitones) % 12, bass=bass)


def _note_pc(name: str) -> int | None:
    m = _ROOT.fullmatch(name)
    if m is None:
        return None
    return (_NOTE_PCS[m[1]] + sum(1 if c in "#♯" else -1 for c in m[2])) % 12


def _quality_tokens(quality: str) -> list[tuple[str, int]]:
    """Words as (word, 0), numbers as ("n", number), accidentals as ("acc", -1) for flat, ("acc", 1) for sharp."""
    tokens: list[tuple[str, int]] = []
    i = 0
    while i < len(quality):
        c = quality[i]
        if c in "b♭#♯":
            tokens.append(("acc", -1 if c in "b♭" else 1))
            i += 1
            continue
        number = next((n for n in _NUMBERS if quality.startswith(n, i)), None)
        if number is not None:
            tokens.append(("n", int(number)))
            i += len(number)
            continue
        word = next((w for w in _WORDS if quality.startswith(w[0], i)), None)
        if word is not None:
            tokens.append((word[1], 0))
            i += len(word[0])
            continue
        i += 1  # "(", ")", ",", spaces and anything unknown: ignored, the rest still counts
    return tokens


def _bind_accidentals(tokens: list[tuple[str, int]], accidentals_after: bool) -> list[tuple[str, int, int]]:
    """Attach each accidental to its number: (kind, number, shift).

    Lead sheets write the accidental first (7b9, 13b9, 9#11); parkR and the WJD write it after the
    tension (79b, 711#, 79b13 = 7 b9 13). With `accidentals_after`, an accidental right after a 5, 9,
    11 or 13 that has none of its own belongs to it; otherwise only a trailing one does (7b9 and 79b
    both read as b9), and the rest belong to the number that follows.
    """
    out: list[tuple[str, int, int]] = []
    pending = 0
    for k, (kind, value) in enumerate(tokens):
        if kind == "acc":
            last = out[-1] if out else None
            number_follows = k + 1 < len(tokens) and tokens[k + 1][0] == "n"
            takes = last and last[0] == "n" and last[1] in (5, 9, 11, 13) and last[2] == 0 and not pending
            if takes and last and (accidentals_after or not number_follows):
                out[-1] = ("n", last[1], value)
            else:
                pending = value
            continue
        if kind == "n":
            out.append(("n", value, pending))
        else:
            out.append((kind, 0, 0))
        pending = 0
    return out


@lru_cache(maxsize=4096)
def parse_chord(symbol: str, accidentals_after: bool = False) -> Chord | None:
    """`Cm7b5`, `F#7alt`, `Bbmaj7/D`, `Eb-69`, `G13b9` → Chord; `NC` → None.

    `accidentals_after` reads parkR/WJD spelling, where the accidental follows its tension (`A79b13`
    is A7 b9 13, not A7 9 b13). Unknown quality letters are ignored (the rest of the symbol still
    counts, an empty quality is a major triad); a root or slash bass that is not a note name raises
    ChordSymbolError.
    """
    text = symbol.strip()
    if text in _NO_CHORD or not text:
        return None
    m = _ROOT.match(text)
    if m is None:
        raise ChordSymbolError(f"chord symbol {symbol!r} does not start with a note name (A–G, then # or b)")
    root = _note_pc(m[0])
    assert root is not None
    quality, bass = text[m.end() :], None
    if "/" in quality:
        quality, _, slash = quality.rpartition("/")
        if slash[:1].isdigit():  # 6/9 written with a slash
            quality += slash
        else:
            bass = _note_pc(slash)
            if bass is None:
                raise ChordSymbolError(f"chord symbol {symbol!r} has a slash bass that is not a note name")

    third: int | None = 4
    fifth: int | None = 7
    seventh: int | None = None
    tensions: set[int] = set()
    major7 = six = False
    natural_upper = False  # a plain 11 or 13 implies the 9 below it
    tokens = _bind_accidentals(_quality_tokens(quality), accidentals_after)
    for i, (kind, number, shift) in enumerate(tokens):
        after = tokens[i - 1][0] if i else ""
        if kind == "m":
            third = 3
        elif kind == "M":
            major7 = True
        elif kind == "o":
            third, fifth, seventh = 3, 6, 9
        elif kind == "h":
            third, fifth, seventh = 3, 6, 10
        elif kind == "+":
            fifth = 8
        elif kind == "alt":
            seventh, fifth = 10, None
            tensions |= {1, 3, 6, 8}
        elif kind == "sus":
            third = None
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if not (nxt and nxt[0] == "n" and nxt[1] in (2, 4)):
                tensions.add(5)
        elif kind == "n":
            added = after == "add"
            if number == 7:
                if seventh is None:
                    seventh = 11 if major7 else 10
            elif number == 6:
                tensions.add(8 if shift < 0 else 9)
                six = True
            elif number == 5:
                fifth = 7 + shift
            elif number == 3:  # 7susadd3
                third = 4 + shift
            elif number in (2, 4):  # sus2, sus4, add2, add4, or a bare 4 meaning sus4
                if number == 4 and after != "add":
                    third = None
                tensions.add(_TENSION_DEGREES[number] + shift)
            else:  # 9, 11, 13
                tensions.add((_TENSION_DEGREES[number] + shift) % 12)
                if not added and not six and seventh is None:
                    seventh = 11 if major7 else 10
                if number in (11, 13) and shift == 0 and not added:
                    natural_upper = True
                if number == 11 and shift == 0 and not added and third == 4 and not major7:
                    third = None  # a dominant 11 is a 9sus4
    if natural_upper and not tensions & {1, 3}:
        tensions.add(2)
    if major7 and seventh is None and third == 3 and not six and not tensions:
        seventh = 11  # "-^" alone: minor-major
    tensions -= {0, third, fifth, seventh}
    return Chord(root, third, fifth, seventh, frozenset(tensions), bass)


# ----------------------------------------------------------------------------------------------- piano


def fold_into_piano(pitch: int) -> int:
    """The pitch moved by octaves into the piano's range."""
    while pitch > HIGHEST_PITCH:
        pitch -= 12
    while pitch < LOWEST_PITCH:
        pitch += 12
    return pitch


def one_strike_per_key(placed: list[list[float]], gap: float, together: float) -> list[list[float]]:
    """[start, end, pitch, velocity] notes, sorted by start, with no key struck while it still
    sounds: a note ends `gap` seconds before its key is struck again, and two strikes of one key
    within `together` seconds become one note, the longer and louder (a piano cannot do otherwise)."""
    placed = sorted(placed, key=lambda x: (x[2], x[0]))
    kept: list[list[float]] = []
    for p in placed:
        held = kept[-1] if kept and kept[-1][2] == p[2] else None
        if held is not None and held[1] > p[0] - gap:
            if p[0] - held[0] < together:
                held[1], held[3] = max(held[1], p[1]), max(held[3], p[3])
                continue
            held[1] = p[0] - gap
        kept.append(p)
    return sorted(kept, key=lambda x: (x[0], x[2]))
