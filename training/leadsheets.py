"""Jazz lead sheets: the two sources of `/work/shared/corpus/jazz-leadsheets/` already parsed into tables.

- `parkr/irb_*.csv`: 1,185 iRealBook chord charts with durations in beats (MIT). Chords only, the
  lowest-risk material. The forum's style names (`ireal-jazz1300`) give each chart a feel and a tempo.
- `jazzodata/wjd_*.csv`: Weimar Jazz Database solos (MIT), a chord track at beat resolution plus the
  transcribed solo line. Transcriptions of copyrighted recordings: the riskiest material, kept apart
  by `sources` and named in every sheet's licence note.

Impro-Visor, OpenBook, the raw iReal strings and the Omnibook (no durations, no beat-level chords) are
left alone: they need fragile parsers for little that these two lack.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from generator.errors import GeneratorError

from .chords import Chord, ChordSymbolError, parse_chord

SOURCES = ("parkr", "wjd")
FEELS = ("swing", "ballad", "straight")

EPS = 1e-6


@dataclass(frozen=True)
class ChordSpan:
    """One chord of a chart: where it starts and how long it lasts, in beats from the sheet's start."""

    start: float
    duration: float
    symbol: str
    chord: Chord | None  # None: no chord (N.C.)
    section: str = ""  # A, B, N1, Intro, Coda … as the source names it

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class MelodyNote:
    start: float  # beats from the sheet's start, straight (unswung)
    duration: float
    pitch: int  # MIDI, concert pitch, as written


@dataclass(frozen=True)
class LeadSheet:
    id: str  # "parkr/0001-26-2", "wjd/wjd_001_ArtPepper_Anthropology_FINAL"
    title: str
    source: str
    licence: str  # the source's licence and the risk of what is in this sheet
    chords: tuple[ChordSpan, ...]
    melody: tuple[MelodyNote, ...] | None = None
    beats_per_bar: int = 4
    feel: str = "swing"  # one of FEELS
    tempo: float | None = None  # the source's tempo, where it names one

    @property
    def length_beats(self) -> float:
        return max(span.end for span in self.chords)


INTRO_SECTIONS = frozenset({"Intro"})
CODA_SECTIONS = frozenset({"Coda"})
_DROPPED_SECTIONS = frozenset({"Verse", "N1V", "N2V"})  # rubato verses are not part of the swinging form
_METERS = {"4/4": 4, "3/4": 3}
_IREAL_STYLES = {  # iReal style → (feel, typical tempo)
    "ballad": ("ballad", 66.0),
    "slow swing": ("swing", 100.0),
    "medium swing": ("swing", 140.0),
    "medium up swing": ("swing", 180.0),
    "up tempo swing": ("swing", 215.0),
    "waltz": ("swing", 150.0),
    "bossa nova": ("straight", 130.0),
    "even 8ths": ("straight", 120.0),
    "latin": ("straight", 130.0),
    "samba": ("straight", 150.0),
    "funk": ("straight", 100.0),
    "rock pop": ("straight", 110.0),
    "afro": ("straight", 120.0),
}
PARKR_LICENCE = (
    "MIT (klausfrieler/parkR, iRealBook corpus); chord progression of a possibly copyrighted standard: "
    "lowest-risk material"
)
WJD_LICENCE = (
    "MIT (klausfrieler/jazzodata, Weimar Jazz Database); the right hand is a transcribed solo from a "
    "copyrighted recording: highest-risk material, a person should decide before release"
)


def iter_lead_sheets(
    root: Path, skipped: Counter[str] | None = None, sources: Collection[str] = SOURCES
) -> Iterator[LeadSheet]:
    """Every sheet the chosen sources yield, parkR charts first; what can't be used is counted in `skipped`."""
    root = Path(root)
    skipped = Counter() if skipped is None else skipped
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise GeneratorError(f"unknown lead-sheet sources {sorted(unknown)}; choose from {list(SOURCES)}")
    if "parkr" in sources:
        yield from _parkr_sheets(root, skipped)
    if "wjd" in sources:
        yield from _wjd_sheets(root, skipped)


def _parkr_symbol(symbol: str) -> str:
    """Undo a parkR conversion slip: "Bb9" became "B9b", "Ab13b9" became "A13b9b" (the root's flat moved)."""
    m = re.fullmatch(r"([A-G])(9|11|13)([b#])(.*)", symbol)
    return f"{m[1]}{m[3]}{m[2]}{m[4]}" if m else symbol


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "untitled"


def _title_key(title: str) -> str:
    return re.sub(r"[^a-z0-9]", "", re.sub(r"^the\s+", "", title.lower()))


def _ireal_styles(root: Path) -> dict[str, str]:
    """Title key → iReal style name, from the header lines of the decoded Jazz 1300 playlist."""
    path = root / "ireal-jazz1300" / "jazz1300.decoded.txt"
    styles: dict[str, str] = {}
    if not path.is_file():
        return styles
    title = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Title: "):
                title = _title_key(line[7:].strip())
            elif line.startswith("Style: ") and title:
                styles.setdefault(title, line[7:].strip().lower())
    return styles


def _parkr_sheets(root: Path, skipped: Counter[str]) -> Iterator[LeadSheet]:
    folder = root / "parkr"
    tunes_path, chords_path = folder / "irb_tunes.csv", folder / "irb_chords.csv"
    if not (tunes_path.is_file() and chords_path.is_file()):
        skipped["parkr: tables missing"] += 1
        return
    rows_by_tune: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _read_csv(chords_path):
        rows_by_tune[row["compid"]].append(row)
    styles = _ireal_styles(root)
    for tune in _read_csv(tunes_path):
        rows = rows_by_tune.get(tune["compid"])
        beats_per_bar = _METERS.get(tune["time"])
        if not rows:
            skipped["parkr: no chords"] += 1
            continue
        if beats_per_bar is None:
            skipped[f"parkr: unsupported meter {tune['time']}"] += 1
            continue
        spans: list[ChordSpan] = []
        t = 0.0
        try:
            for row in rows:
                if row["section"] in _DROPPED_SECTIONS:
                    continue
                duration = float(row["duration"])
                if not duration > 0:
                    raise ValueError(row["duration"])
                symbol = _parkr_symbol(row["chord"])
                chord = parse_chord(symbol, accidentals_after=True)
                spans.append(ChordSpan(t, duration, symbol, chord, row["section"]))
                t += duration
        except ChordSymbolError:
            skipped["parkr: unparseable chord symbol"] += 1
            continue
        except ValueError:
            skipped["parkr: bad duration"] += 1
            continue
        form = [s for s in spans if s.section not in INTRO_SECTIONS | CODA_SECTIONS]
        form_beats = sum(s.duration for s in form)
        if not form or all(s.chord is None for s in form):
            skipped["parkr: empty form"] += 1
            continue
        if abs(form_beats / beats_per_bar - round(form_beats / beats_per_bar)) > EPS:
            skipped["parkr: form is not whole bars"] += 1
            continue
        feel, tempo = _IREAL_STYLES.get(styles.get(_title_key(tune["title"]), ""), ("swing", None))
        yield LeadSheet(
            id=f"parkr/{int(tune['compid']):04d}-{_slug(tune['title'])}",
            title=tune["title"],
            source="parkr iRealBook chord chart",
            licence=PARKR_LICENCE,
            chords=tuple(spans),
            beats_per_bar=beats_per_bar,
            feel=feel,
            tempo=tempo,
        )


def _wjd_sheets(root: Path, skipped: Counter[str]) -> Iterator[LeadSheet]:
    folder = root / "jazzodata"
    meta_path = folder / "wjd_meta.csv"
    if not meta_path.is_file():
        skipped["wjd: meta table missing"] += 1
        return
    for meta in _read_csv(meta_path):
        stem = meta["file_stem"]
        beats_path, notes_path = folder / f"{stem}.beats.csv", folder / f"{stem}.notes.csv"
        if not (beats_path.is_file() and notes_path.is_file()):
            skipped["wjd: beats or notes table missing"] += 1
            continue
        reason, sheet = _wjd_sheet(meta, _read_csv(beats_path), _read_csv(notes_path))
        if sheet is None:
            skipped[f"wjd: {reason}"] += 1
        else:
            yield sheet


def _wjd_sheet(
    meta: dict[str, str], beats: list[dict[str, str]], notes: list[dict[str, str]]
) -> tuple[str, LeadSheet | None]:
    periods = {row["period"] for row in beats}
    if not beats or len(periods) != 1 or int(next(iter(periods))) not in (3, 4):
        return f"unsupported meter (beats per bar {sorted(periods)})", None
    beats_per_bar = int(next(iter(periods)))
    offset = int(beats[0]["beat"]) - 1  # a pickup: beat 0 stays a downbeat
    index: dict[tuple[str, str], int] = {}
    for i, row in enumerate(beats):
        if (i + offset) % beats_per_bar != int(row["beat"]) - 1:
            return "irregular beat grid", None
        index[(row["bar"], row["beat"])] = i + offset

    spans: list[ChordSpan] = []
    try:
        for i, row in enumerate(beats):
            symbol = row["chord"].strip() or "NC"
            if spans and spans[-1].symbol == symbol and spans[-1].section == row["form_part"]:
                last = spans[-1]
                spans[-1] = replace(last, duration=last.duration + 1)
            else:
                chord = parse_chord(symbol, accidentals_after=True)
                spans.append(ChordSpan(float(i + offset), 1.0, symbol, chord, row["form_part"]))
    except ChordSymbolError:
        return "unparseable chord symbol", None

    beat_seconds = [_number(row["duration_s"], 0.0) for row in beats]
    typical = sorted(beat_seconds)[len(beat_seconds) // 2] or 0.5
    melody: list[MelodyNote] = []
    for row in notes:
        at = index.get((row["bar"], row["beat"]))
        if at is None:
            return "note off the beat grid", None
        start = at + (int(row["tatum"]) - 1) / max(int(row["division"]), 1)
        seconds = _number(row["duration_s"], math.nan)
        local = beat_seconds[at - offset] if 0 <= at - offset < len(beat_seconds) else typical
        duration = seconds / (local if local > 0 else typical) if seconds == seconds else 1.0
        melody.append(MelodyNote(start, min(max(duration, 0.1), 4.0), round(float(row["pitch"]))))
    if not melody:
        return "no notes", None
    melody.sort(key=lambda n: (n.start, n.pitch))

    feel_name = meta["rhythmfeel"].upper()
    feel = "swing" if feel_name in ("SWING", "TWOBEAT") else "ballad" if feel_name == "BALLAD" else "straight"
    tempo = _number(meta["avgtempo"], math.nan)
    return "", LeadSheet(
        id=f"wjd/{meta['file_stem']}",
        title=f"{meta['title']} ({meta['performer']} solo)",
        source="Weimar Jazz Database solo with its chord track",
        licence=WJD_LICENCE,
        chords=tuple(spans),
        melody=tuple(melody),
        beats_per_bar=beats_per_bar,
        feel=feel,
        tempo=tempo if tempo == tempo and tempo > 0 else None,
    )


def _number(text: str, default: float) -> float:
    try:
        return float(text)
    except ValueError:
        return default
