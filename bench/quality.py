"""How good is a checkpoint, per genre: degenerate share, density, polyphony, genre control.

    python bench/quality.py [--checkpoint PATH] [--pieces 32] [--tokens 1024] [--data data/dataset]

For each genre, compose N pieces at the genre preset and report: the share of degenerate pieces
(glued same-pitch notes > 90 %, silent, or fewer than 20 notes), the share where one key takes
over (over 40 % of the onsets on one pitch; no real validation excerpt does), notes per second,
polyphony (notes sounding at an onset, averaged), the share of onsets in the bass (C3 and below),
and the distance between the pieces' key-normalised pitch-class histogram and each genre's
validation pieces (cut into excerpts of the same length). Genre control works when a genre's
pieces are closer to its own validation set than to any other's; the distances between the
validation sets themselves are printed as the floor, and each set's split-half distance as the
noise (a margin smaller than that is not a verdict).
Validation NLL per genre comes from the dataset's held-out pieces. A piano-roll grid per genre
goes to out/quality/<genre>.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import style
from PIL import Image

from generator import GenerationRequest, load_model, preset_sampling
from generator import vocab as V
from generator.decoding import generate
from generator.pianoroll import piano_roll
from generator.postprocess import postprocess, repetition_share
from generator.sampling import BASS_TOP
from generator.tokenizer import Note, decode_notes

# Krumhansl–Kessler key profiles (probe-tone ratings), major and minor, tonic first.
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def pitch_class_profile(notes: list[Note]) -> np.ndarray:
    """Duration-weighted pitch-class histogram rotated to the piece's tonic (Krumhansl–Schmuckler
    key finding: the best-correlated of the 24 major and minor keys), so pieces in different
    keys compare by how they use the scale, not by their key. Rotating to the commonest class
    instead puts a piece's tonic or its dominant first by chance, which made even two halves of
    one validation set differ as much as two genres do."""
    h = pitch_classes(notes)
    if h.sum() == 0:
        return h
    _, tonic = key_of(h)
    return np.roll(h, -tonic)


def pitch_classes(notes: list[Note]) -> np.ndarray:
    """Duration-weighted pitch-class histogram, summing to 1 (all zero for no notes)."""
    h = np.zeros(12)
    for n in notes:
        h[n.pitch % 12] += n.end - n.start
    return h / h.sum() if h.sum() else h


def key_of(h: np.ndarray) -> tuple[float, int]:
    """(correlation, tonic pitch class) of the best-fitting major or minor key profile."""
    return max((np.corrcoef(np.roll(h, -k), key)[0, 1], k) for key in (MAJOR, MINOR) for k in range(12))


def style_features(pieces: list[list[Note]]) -> np.ndarray:
    """bench/style.py's feature vectors of the pieces that have notes."""
    rows = [style.features(p, key_of(pitch_classes(p))[0]) for p in pieces if p]
    return np.array(rows).reshape(-1, len(style.FEATURES))


def split_half(pieces: list[list[Note]]) -> float:
    """Distance between the mean profiles of alternate halves of `pieces`: how much of a distance
    is noise at this many pieces."""
    return distance(mean_profile(pieces[::2]), mean_profile(pieces[1::2]))


def mean_profile(pieces: list[list[Note]]) -> np.ndarray:
    profiles = [pitch_class_profile(p) for p in pieces if p]
    return np.mean(profiles, axis=0) if profiles else np.zeros(12)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum() / 2)  # total variation, in [0, 1]


def notes_per_second(pieces: list[list[Note]]) -> float:
    seconds = sum(max((n.end for n in p), default=0) for p in pieces) / 100
    return sum(len(p) for p in pieces) / seconds if seconds else 0.0


def polyphony(notes: list[Note]) -> float:
    if not notes:
        return 0.0
    starts = np.array([n.start for n in notes])
    ends = np.array([n.end for n in notes])
    return float(np.mean([((starts <= s) & (ends > s)).sum() for s in starts]))


def bass_share(pieces: list[list[Note]]) -> float:
    """The share of all onsets at C3 (MIDI 48) and below: the register the `bass` preset moves."""
    pitches = [n.pitch for p in pieces for n in p]
    return sum(q <= BASS_TOP for q in pitches) / max(1, len(pitches))


def is_bad(notes: list[Note]) -> bool:
    return len(notes) < 20 or repetition_share(notes) > 0.9


def one_key(notes: list[Note], share: float = 0.4) -> bool:
    """One pitch holds more than `share` of the onsets: a key repeated on and on, which the
    degenerate test misses when the repeats have gaps between them."""
    return bool(notes) and np.bincount([n.pitch for n in notes]).max() / len(notes) > share


def reference_shard(data: Path, genre: str, reference: str):
    """The genre's validation pieces; with reference "real", without the ambient our own code
    realised (so the classifier, the densities and the NLL compare with the figures measured
    before it existed)."""
    from training.dataset import REALISED_AMBIENT, Shard

    shard = Shard.load(data, genre, "val")
    if reference == "all":
        return shard
    names = json.loads((data / f"{genre}.val.pieces.json").read_text())
    keep = [i for i, name in enumerate(names) if not name.startswith(REALISED_AMBIENT)]
    if len(keep) == len(names):
        return shard
    parts = [np.asarray(shard.piece(i)) for i in keep]
    offsets = np.cumsum([0] + [len(p) for p in parts], dtype=np.int64)
    realised = None if shard.realised is None else shard.realised[keep]
    return Shard(genre, np.concatenate(parts) if parts else np.zeros(0, np.uint16), offsets, realised)


def validation_excerpts(
    data: Path, genre: str, length: int, per_piece: int = 4, reference: str = "real"
) -> list[list[Note]]:
    """Held-out music cut into excerpts as long as the generated pieces (up to `per_piece`
    consecutive ones per piece): like is compared with like, since a whole sonata wanders
    through more keys than 20 seconds of it, and the many excerpts steady the mean."""
    shard = reference_shard(data, genre, reference)
    excerpts = []
    for i in range(shard.n_pieces):
        piece = shard.piece(i).tolist()
        for k in range(min(per_piece, max(1, len(piece) // length))):
            excerpts.append(decode_notes(piece[k * length : (k + 1) * length]))
    return [e for e in excerpts if e]


def genre_conditioning(model, windows: dict) -> dict[str, dict[str, float]]:
    """Validation NLL of each genre's windows under every genre token: how much the model uses
    its conditioning (a row whose own token is not the lowest is a genre the model cannot tell)."""
    from training.train import validation_nll

    out = {}
    for g, (x, y) in windows.items():
        out[g] = {}
        for h in V.GENRES:
            relabelled = x.clone()
            relabelled[:, 0] = V.genre_token(h)  # controls, if any, stay "unknown"
            out[g][h] = validation_nll(model, {g: (relabelled, y)})[g]
    return out


def control_table(loaded, pieces_per_level: int, tokens: int, seed: int) -> dict[str, list[dict]]:
    """Is each control followed? For every attribute and level, compose pieces (the genres in
    turn, the other controls unknown) and measure the level each piece comes out at."""
    from dataclasses import replace

    from generator.controls import ATTRIBUTES, N_BINS, measure

    model, spec = loaded.model, loaded.model.controls
    requests, asked = [], []
    for a in ATTRIBUTES:
        for level in range(N_BINS):
            for i in range(pieces_per_level):
                g = V.GENRES[i % len(V.GENRES)]
                levels = {x: None for x in ATTRIBUTES} | {a: level}
                sampling = replace(preset_sampling(g, loaded.presets), **levels)
                requests.append(GenerationRequest(g, sampling, max_new_tokens=tokens, seed=seed + len(requests)))
                asked.append((a, level))
    pieces = generate(model, requests)
    table: dict[str, list[dict]] = {a: [] for a in ATTRIBUTES}
    for a in ATTRIBUTES:
        for level in range(N_BINS):
            values = [
                m.get(a)
                for (aa, lv), p in zip(asked, pieces)
                if aa == a and lv == level and (m := measure(p.new_tokens)) is not None
            ]
            bins = [spec.bin_of(a, v) for v in values]
            table[a].append(
                {
                    "level": level,
                    "range": spec.range_of(a, level),
                    "mean": float(np.mean(values)) if values else float("nan"),
                    "in_bin": bins.count(level) / len(bins) if bins else 0.0,
                    "within_one": sum(abs(b - level) <= 1 for b in bins) / len(bins) if bins else 0.0,
                    "measured_bins": [bins.count(b) for b in range(N_BINS)],
                }
            )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--pieces", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--data", default="data/dataset")
    ap.add_argument("--out", default="out/quality")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--temperature", type=float, help="instead of each genre's preset temperature")
    ap.add_argument(
        "--reference",
        choices=("real", "all"),
        default="real",
        help="validation pieces the classifier, densities and NLL use: real music only (default), or "
        "also the ambient our own code realised",
    )
    ap.add_argument("--control-pieces", type=int, default=8, help="pieces per control level (0: no control table)")
    ap.add_argument("--skip-pieces", action="store_true", help="only the NLL and control tables")
    args = ap.parse_args()

    from melomania.settings import Settings

    ckpt = args.checkpoint or Settings().checkpoint_path()
    loaded = load_model(ckpt)
    model = loaded.model
    data = Path(args.data)
    have_data = (data / "summary.json").is_file()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    requests = [
        GenerationRequest(
            g,
            preset_sampling(g, loaded.presets, temperature=args.temperature),
            max_new_tokens=args.tokens,
            seed=args.seed + i,
        )
        for g in V.GENRES
        for i in range(args.pieces)
    ]
    pieces = generate(model, requests if not args.skip_pieces else requests[:: args.pieces])
    by_genre: dict[str, list[list[Note]]] = {g: [] for g in V.GENRES}
    for r, p in zip(requests if not args.skip_pieces else requests[:: args.pieces], pieces):
        by_genre[r.genre].append(decode_notes(postprocess(p.new_tokens)))

    val = (
        {g: validation_excerpts(data, g, args.tokens, reference=args.reference) for g in V.GENRES} if have_data else {}
    )
    everything = {g: validation_excerpts(data, g, args.tokens, reference="all") for g in V.GENRES} if have_data else {}
    val_profiles = {g: mean_profile(v) for g, v in val.items()}
    nll: dict[str, float] = {}
    conditioning: dict[str, dict[str, float]] = {}
    nll_known: dict[str, float] = {}
    nll_no_source: dict[str, float] = {}
    if have_data:
        from training.train import TrainConfig, validation_nll, validation_set

        cfg = TrainConfig.evaluating(model, eval_windows=32)
        shards = {g: reference_shard(data, g, args.reference) for g in V.GENRES}
        # controls "unknown": comparable with a model without them; the source, where the model
        # has one, is each window's own, as the genre token is
        windows = validation_set(shards, cfg)
        nll = validation_nll(model.float(), windows)
        conditioning = genre_conditioning(model, windows)
        if model.controls is not None:
            nll_known = validation_nll(model, validation_set(shards, cfg, known_controls=True))
        if model.controls is not None and model.controls.sources:
            nll_no_source = validation_nll(model, validation_set(shards, cfg, known_source=False))

    rows = {}
    header = (
        f"{'genre':<8} {'degenerate':>10} {'one key':>7} {'notes/s':>8} {'(data)':>14} "
        f"{'polyphony':>9} {'(data)':>6} {'bass':>5} {'(data)':>6} {'nll':>6}  "
        + " ".join(f"{'d→' + V.display_name(h):>10}" for h in val)
    )
    print(f"checkpoint {ckpt}: {args.pieces} pieces × {args.tokens} tokens per genre")
    print(header)
    for g in V.GENRES:
        notes = by_genre[g]
        bad = sum(is_bad(p) for p in notes) / len(notes)
        stuck = sum(one_key(p) for p in notes) / len(notes)
        nps = notes_per_second(notes)
        poly = float(np.mean([polyphony(p) for p in notes]))
        dists = {h: distance(mean_profile(notes), val_profiles[h]) for h in val}
        own_closest = bool(dists) and min(dists, key=dists.get) == g
        others = [d for h, d in dists.items() if h != g]
        margin = (min(others) - dists[g]) if dists and others else float("nan")
        noise = split_half(notes)
        data_nps = notes_per_second(val[g]) if val else float("nan")
        all_nps = notes_per_second(everything[g]) if everything else float("nan")
        data_poly = float(np.mean([polyphony(p) for p in val[g]])) if val else float("nan")
        bass, data_bass = bass_share(notes), (bass_share(val[g]) if val else float("nan"))
        rows[g] = {
            "data_notes_per_s": data_nps,
            "data_notes_per_s_with_realised": all_nps,
            "data_polyphony": data_poly,
            "bass_share": bass,
            "data_bass_share": data_bass,
            "val_nll_known_controls": nll_known.get(g),
            "val_nll_source_unknown": nll_no_source.get(g),
            "margin": margin,
            "split_half_noise": noise,
            "degenerate_share": bad,
            "one_key_share": stuck,
            "notes_per_s": nps,
            "polyphony": poly,
            "val_nll": nll.get(g),
            "val_nll_by_genre_token": conditioning.get(g),
            "distance_to_val": dists,
            "closest_to_own_genre": own_closest,
        }
        print(
            f"{V.display_name(g):<8} {bad:>10.0%} {stuck:>7.0%} {nps:>8.1f} "
            f"{f'({data_nps:.1f}, {all_nps:.1f})':>14} {poly:>9.2f} "
            f"{f'({data_poly:.1f})':>6} {bass:>5.0%} {f'({data_bass:.0%})':>6} {nll.get(g, float('nan')):>6.3f}  "
            + " ".join(f"{dists[h]:>10.3f}" for h in val)
            + (f"  ✓ own genre closest by {margin:.3f}" if own_closest else "  ✗")
            + f" (noise {noise:.3f})"
        )
        tiles = [piano_roll(p, 480, 160) for p in notes[:8] if p]
        grid = Image.new("RGB", (960, 160 * ((len(tiles) + 1) // 2)))
        for i, tile in enumerate(tiles):
            grid.paste(tile, ((i % 2) * 480, (i // 2) * 160))
        grid.save(out / f"{V.display_name(g)}.png", optimize=True)
    if val:
        print("floor — distances between the validation sets themselves (then split-half noise, density):")
        for g in val:
            print(
                f"  {V.display_name(g):<8} "
                + " ".join(f"{distance(val_profiles[g], val_profiles[h]):>10.3f}" for h in val)
                + f"   noise {split_half(val[g]):.3f}, {notes_per_second(val[g]):.1f} notes/s"
            )
    real = {g: style_features(v) for g, v in val.items() if len(v) >= 2}  # fit and held-out halves
    if len(real) >= 2:
        named = style.confusion(style.NearestCentroid(real), {g: style_features(by_genre[g]) for g in real})
        ceiling = style.held_out_accuracy(real)
        print("style (bench/style.py): the real genre each genre's pieces are nearest to, by rhythm, texture,")
        print("register, dynamics and tonal clarity; last column: held-out real excerpts named rightly (the ceiling)")
        print(f"  {'composed':<8} " + " ".join(f"{'→' + V.display_name(h):>9}" for h in named))
        for g, row in named.items():
            print(f"  {V.display_name(g):<8} " + " ".join(f"{row[h]:>9.0%}" for h in row) + f"   {ceiling[g]:.0%}")
            rows[g]["style_named_as"] = row
            rows[g]["style_ceiling"] = ceiling[g]
    if conditioning:
        print("validation NLL with each genre token (rows: the music's genre; lowest should be its own):")
        for g, row in conditioning.items():
            print(f"  {V.display_name(g):<8} " + " ".join(f"{V.display_name(h)} {v:.3f}" for h, v in row.items()))
    if nll_known:
        print(
            "validation NLL with each window's own measured controls: "
            + ", ".join(f"{V.display_name(g)} {v:.3f}" for g, v in nll_known.items())
        )
    if nll_no_source:
        print(
            "validation NLL with the source unknown too: "
            + ", ".join(f"{V.display_name(g)} {v:.3f}" for g, v in nll_no_source.items())
        )
    if model.controls is not None and args.control_pieces:
        table = control_table(loaded, args.control_pieces, min(args.tokens, 512), args.seed + 100_000)
        print(f"attribute controls: {args.control_pieces} pieces per level (genres in turn), level asked vs measured")
        for a, levels in table.items():
            print(f"  {a}")
            for r in levels:
                print(
                    f"    asked {r['level']} ({r['range']:<22}) measured mean {r['mean']:6.2f}, in the bin "
                    f"{r['in_bin']:4.0%}, within one {r['within_one']:4.0%}; measured levels {r['measured_bins']}"
                )
        for g in rows:
            rows[g]["controls"] = table
    print(f"piano-roll grids in {out}/")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
