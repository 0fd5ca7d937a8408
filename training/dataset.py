"""Training data: MIDI from ../shared/corpus (and realised jazz lead sheets) → compact token shards.

Splits are by piece, seeded, about `val_fraction` of each genre, so no piece is on both sides.
Each genre and split is two arrays: every piece's tokens concatenated (uint16) and the offsets.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from generator import vocab as V
from generator.errors import PrimerError
from generator.tokenizer import encode_notes, load_midi, notes_of

MIN_TOKENS = 32  # shorter pieces teach nothing
REALISED_AMBIENT = "ambient-realised/"  # split key and source prefix of the ambient realiser's pieces
LICENCES = {
    "asap": "CC BY-NC-SA 4.0",
    "piano-midi-de": "CC BY-SA 3.0 DE (by reference)",
    "pop909": "MIT",
    "emopia-q1q2": "CC BY-NC-SA 4.0",
    "emopia-q3": "CC BY-NC-SA 4.0",
    "emopia-q4": "CC BY-NC-SA 4.0",
    "tegridy-relax": "CC BY-NC-SA",
    "huwcheston-jazz-excerpts": "MIT (code licence; recordings copyrighted)",
    "music-composer-samples": "MIT",
}
PERMISSIVE = {"pop909", "huwcheston-jazz-excerpts", "music-composer-samples"}


@dataclass(frozen=True)
class BuildConfig:
    corpus: Path = Path("../shared/corpus")
    out: Path = Path("data/dataset")
    val_fraction: float = 0.05
    seed: int = 0
    permissive_only: bool = False
    jazz_leadsheets: bool = True  # realise ../shared/corpus/jazz-leadsheets into jazz piano
    jazz_versions: int = 2  # realisations per lead sheet (different tempo, key, comping)
    jazz_limit: int | None = None
    # ambient realised by our own code (training/ambient.py), beside the real low-arousal clips
    ambient: bool = True
    ambient_versions: int = 2
    ambient_lead_sheets: int | None = 400
    ambient_modal: int = 300
    ambient_diatonic: int = 300
    calm_sources: tuple[str, ...] | None = None  # real calm folders to keep (None: every one)
    workers: int = 2


@dataclass(frozen=True)
class Item:
    genre: str
    piece: str  # split key: every version of one piece shares it
    source: str
    path: Path | None = None


@dataclass
class Summary:
    genres: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    sources: dict[str, dict[str, object]] = field(default_factory=dict)
    permissive_only: bool = False


def midi_items(config: BuildConfig) -> Iterator[Item]:
    for genre in V.GENRES:
        for folder in sorted((config.corpus / genre).glob("*")):
            if not folder.is_dir() or (config.permissive_only and folder.name not in PERMISSIVE):
                continue
            if genre == "calm" and config.calm_sources is not None and folder.name not in config.calm_sources:
                continue
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in (".mid", ".midi"):
                    yield Item(genre, f"{folder.name}/{path.relative_to(folder)}", folder.name, path)


def encode_file(path: Path) -> tuple[list[int] | None, str]:
    """(tokens, '') or (None, why it was skipped)."""
    try:
        tokens = encode_notes(notes_of(load_midi(path), piano_range=True))
    except PrimerError:
        return None, "unreadable MIDI"
    except Exception as exc:  # a damaged file must not stop a build of thousands
        return None, f"failed to encode ({type(exc).__name__})"
    if not tokens:
        return None, "no piano notes"
    if len(tokens) < MIN_TOKENS:
        return None, f"shorter than {MIN_TOKENS} tokens"
    return tokens, ""


def split_pieces(pieces: list[str], fraction: float, seed: int) -> set[str]:
    """The validation pieces of one genre: a seeded ~fraction, at least one when there are two or more."""
    unique = sorted(set(pieces))
    rng = random.Random(f"{seed}:{hashlib.sha256('|'.join(unique).encode()).hexdigest()}")
    rng.shuffle(unique)
    n = round(len(unique) * fraction)
    if len(unique) >= 2:
        n = max(n, 1)
    return set(unique[:n])


def build(config: BuildConfig, progress=None) -> Summary:
    """Encode everything, split by piece, write shards and summary.json under config.out."""
    items = list(midi_items(config))
    encoded: list[tuple[Item, list[int]]] = []
    skipped: Counter[str] = Counter()
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        for item, (tokens, why) in zip(items, pool.map(encode_file, [i.path for i in items], chunksize=8)):
            if tokens is None:
                skipped[f"{item.genre}: {why}"] += 1
            else:
                encoded.append((item, tokens))
            if progress:
                progress(len(encoded) + sum(skipped.values()), len(items))
    if config.jazz_leadsheets:
        encoded += list(_realised_jazz(config, skipped))
    if config.ambient:
        encoded += list(_realised_ambient(config, skipped))

    summary = Summary(skipped=dict(skipped), permissive_only=config.permissive_only)
    config.out.mkdir(parents=True, exist_ok=True)
    for genre in V.GENRES:
        mine = [(i, t) for i, t in encoded if i.genre == genre]
        # The realised ambient is split on its own, so adding it leaves the real pieces' split
        # (and every figure measured on their validation side) as it was.
        val = split_pieces(
            [i.piece for i, _ in mine if not i.piece.startswith(REALISED_AMBIENT)], config.val_fraction, config.seed
        ) | split_pieces(
            [i.piece for i, _ in mine if i.piece.startswith(REALISED_AMBIENT)], config.val_fraction, config.seed
        )
        summary.genres[genre] = {}
        for split in ("train", "val"):
            part = [(i, t) for i, t in mine if (i.piece in val) == (split == "val")]
            write_shard(config.out / f"{genre}.{split}", part)
            n_tokens = sum(len(t) for _, t in part)
            seconds = sum(_seconds(t) for _, t in part)
            summary.genres[genre][split] = {
                "pieces": len({i.piece for i, _ in part}),
                "files": len(part),
                "tokens": n_tokens,
                "hours": round(seconds / 3600, 2),
            }
        for i, t in mine:
            src = summary.sources.setdefault(  # one folder name can appear under several genres
                f"{genre}/{i.source}", {"genre": genre, "licence": _licence(i.source), "files": 0, "tokens": 0}
            )
            src["files"] = int(src["files"]) + 1
            src["tokens"] = int(src["tokens"]) + len(t)
    (config.out / "summary.json").write_text(
        json.dumps({**asdict(summary), "config": {k: str(v) for k, v in asdict(config).items()}}, indent=2)
    )
    return summary


def _licence(source: str) -> str:
    if source.startswith(REALISED_AMBIENT):
        return (
            "MIT (parkR chord charts), realised by our code" if "parkr" in source else "ours (generated progressions)"
        )
    if source.startswith("jazz-leadsheets"):
        from . import leadsheets

        licences = {"parkr": leadsheets.PARKR_LICENCE, "wjd": leadsheets.WJD_LICENCE}
        return licences.get(source.split("/")[-1], "see README")
    return LICENCES.get(source, "unknown")


def _seconds(tokens: list[int]) -> float:
    arr = np.asarray(tokens)
    shifts = arr[(arr >= V.TIME_SHIFT) & (arr < V.END)]
    return float((shifts - V.TIME_SHIFT + 1).sum()) * V.TICK_SECONDS


def _realised_jazz(config: BuildConfig, skipped: Counter[str]) -> Iterator[tuple[Item, list[int]]]:
    root = config.corpus / "jazz-leadsheets"
    if not root.is_dir():
        return
    from . import jazz, leadsheets

    # parkR's chord charts are the safest material; the Weimar solos are transcriptions of
    # copyrighted recordings, so a permissive-only build leaves them out.
    sources = ("parkr",) if config.permissive_only else leadsheets.SOURCES
    reasons: Counter[str] = Counter()
    for piece_id, midi, _note in jazz.realise_corpus(
        root,
        versions=config.jazz_versions,
        limit=config.jazz_limit,
        seed=config.seed,
        sources=sources,
        skipped=reasons,
    ):
        sheet = piece_id.rsplit("/v", 1)[0]  # every version of one sheet is one piece for the split
        item = Item("jazz", sheet, "jazz-leadsheets/" + piece_id.split("/")[0])
        yield from _encoded(item, midi, "realised lead sheet too short", reasons)
    for why, n in reasons.items():
        skipped[f"jazz lead sheets: {why}"] += n


def _encoded(item: Item, midi, too_short: str, reasons: Counter[str]) -> Iterator[tuple[Item, list[int]]]:
    """A realised piece as tokens, or counted in `reasons` as `too_short`."""
    tokens = encode_notes(notes_of(midi, piano_range=True))
    if len(tokens) < MIN_TOKENS:
        reasons[too_short] += 1
    else:
        yield item, tokens


def _realised_ambient(config: BuildConfig, skipped: Counter[str]) -> Iterator[tuple[Item, list[int]]]:
    from . import ambient

    root = config.corpus / "jazz-leadsheets"
    reasons: Counter[str] = Counter()
    for piece_id, midi, _note in ambient.realise_corpus(
        root if root.is_dir() else None,
        versions=config.ambient_versions,
        seed=config.seed,
        lead_sheets=config.ambient_lead_sheets,
        modal=config.ambient_modal,
        diatonic=config.ambient_diatonic,
        skipped=reasons,
    ):
        progression = piece_id.rsplit("/v", 1)[0]  # every version of one progression is one piece for the split
        item = Item("calm", REALISED_AMBIENT + progression, REALISED_AMBIENT + progression.split("/")[0])
        yield from _encoded(item, midi, "realised ambient too short", reasons)
    for why, n in reasons.items():
        skipped[f"ambient: {why}"] += n


def is_realised(piece: str) -> bool:
    """Was this piece written by our realisers (not a real recording or score)?"""
    return piece.startswith((REALISED_AMBIENT, "parkr/", "wjd/"))


def write_shard(stem: Path, part: list[tuple[Item, list[int]]]) -> None:
    tokens = np.fromiter((t for _, ts in part for t in ts), dtype=np.uint16)
    offsets = np.cumsum([0] + [len(ts) for _, ts in part], dtype=np.int64)
    np.save(stem.with_name(stem.name + ".tokens.npy"), tokens)
    np.save(stem.with_name(stem.name + ".offsets.npy"), offsets)
    stem.with_name(stem.name + ".pieces.json").write_text(json.dumps([i.piece for i, _ in part]))


@dataclass
class Shard:
    """One genre's pieces of one split, memory-mapped."""

    genre: str
    tokens: np.ndarray
    offsets: np.ndarray
    realised: np.ndarray | None = None  # per piece: written by our realisers (None: not recorded)

    @classmethod
    def load(cls, root: Path, genre: str, split: str) -> Shard:
        names = root / f"{genre}.{split}.pieces.json"
        return cls(
            genre,
            np.load(root / f"{genre}.{split}.tokens.npy", mmap_mode="r"),
            np.load(root / f"{genre}.{split}.offsets.npy"),
            np.array([is_realised(n) for n in json.loads(names.read_text())], dtype=bool) if names.exists() else None,
        )

    @property
    def n_pieces(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def piece(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]
