"""Choose each genre's control preset (density, loudness, polyphony levels) for a checkpoint with
attribute controls: the levels at which bench/style.py's classifier, fitted on real validation
excerpts, names the genre's pieces as that genre most often, among levels whose notes per second
stay within a factor of the real excerpts' (none qualifying: the closest). Tuned on seeds kept
apart from the ones bench/quality.py reports with; the sampling values stay the preset's.

    python bench/tune_controls.py --checkpoint runs/controls/best.pt [--pieces 16] [--out presets.toml]

Candidates per genre: no controls, the levels the genre's real excerpts measure at (their median),
and single-level steps from there, plus a small grid for ambient and for jazz.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import style
from quality import is_bad, notes_per_second, style_features, validation_excerpts

from generator import GenerationRequest, SamplingParams, load_model, preset_sampling
from generator import vocab as V
from generator.checkpoint import stored_presets
from generator.controls import ATTRIBUTES, N_BINS, Controls, measure
from generator.decoding import generate
from generator.postprocess import postprocess
from generator.tokenizer import decode_notes

TUNING_SEED = 5000  # bench/quality.py reports on seeds from 1000


def typical(model, data: Path, genre: str, tokens: int) -> Controls:
    """The levels a genre's real validation excerpts measure at, by their median."""
    from quality import reference_shard

    shard = reference_shard(data, genre, "real")
    values = []
    for i in range(shard.n_pieces):
        piece = shard.piece(i).tolist()
        for k in range(0, max(1, len(piece) - tokens + 1), tokens):
            if (a := measure(piece[k : k + tokens])) is not None:
                values.append([a.get(x) for x in ATTRIBUTES])
    median = np.median(np.array(values), axis=0)
    return Controls(**{a: model.controls.bin_of(a, v) for a, v in zip(ATTRIBUTES, median)})


def candidates(genre: str, base: Controls) -> list[Controls]:
    out = [Controls(), base]
    for a in ATTRIBUTES:
        for step in (-1, 1):
            level = base.get(a) + step
            if 0 <= level < N_BINS:
                out.append(replace(base, **{a: level}))
    if genre == "calm":  # sparse, soft and sustained, the texture the realised ambient teaches
        out += [Controls(d, lo, p) for d, lo, p in itertools.product((0, 1), (0, 1), (3, 4))]
    if genre == "jazz":  # busy, mezzo-forte, a few voices: where the realised jazz sits
        out += [Controls(d, lo, p) for d, lo, p in itertools.product((2, 3), (2, 3), (1, 2, 3))]
    unique = []
    for c in out:
        if c not in unique:
            unique.append(c)
    return unique


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="data/dataset")
    ap.add_argument("--pieces", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--density", type=float, default=1.5, help="allowed factor off the real notes per second")
    ap.add_argument("--genres", default=",".join(V.GENRES))
    ap.add_argument("--out", default="presets.toml")
    ap.add_argument(
        "--presets-from",
        default="generator/checkpoints/melomania-small.pt",
        help="sampling presets to keep, for a training checkpoint that carries none",
    )
    args = ap.parse_args()

    loaded = load_model(args.checkpoint)
    model = loaded.model
    if model.controls is None:
        raise SystemExit(f"{args.checkpoint} has no attribute controls to tune")
    presets = loaded.presets or {
        g: replace(p, **asdict(Controls())) for g, p in stored_presets(args.presets_from).items()
    }
    data = Path(args.data)
    excerpts = {g: validation_excerpts(data, g, args.tokens) for g in V.GENRES}
    classifier = style.NearestCentroid({g: style_features(e) for g, e in excerpts.items()})
    real_nps = {g: notes_per_second(e) for g, e in excerpts.items()}

    requests, keys = [], []
    for g in args.genres.split(","):
        for c in candidates(g, typical(model, data, g, args.tokens)):
            sampling = replace(preset_sampling(g, presets), **asdict(c))
            for i in range(args.pieces):
                requests.append(GenerationRequest(g, sampling, max_new_tokens=args.tokens, seed=TUNING_SEED + i))
                keys.append((g, c))
    print(f"composing {len(requests)} pieces ({args.pieces} per candidate)", flush=True)
    pieces = generate(model, requests)
    grouped: dict[tuple[str, Controls], list] = {}
    for key, p in zip(keys, pieces):
        grouped.setdefault(key, []).append(decode_notes(postprocess(p.new_tokens)))

    best: dict[str, tuple] = {}
    print(f"{'genre':<8} {'controls':<52} {'named own':>9} {'bad':>5} {'notes/s':>8} {'(real)':>7}")
    for (g, c), notes in grouped.items():
        named = style.confusion(classifier, {g: style_features(notes)})[g][g]
        bad = sum(is_bad(p) for p in notes) / len(notes)
        nps = notes_per_second(notes)
        off = max(nps / real_nps[g], real_nps[g] / max(nps, 1e-9))
        score = (off > args.density, bad > 0.05, -named, off)
        print(f"{V.display_name(g):<8} {c.describe():<52} {named:>9.0%} {bad:>5.0%} {nps:>8.1f} {real_nps[g]:>7.1f}")
        if g not in best or score < best[g][0]:
            best[g] = (score, c)
    lines = []
    default = asdict(SamplingParams())
    for g, (_, c) in best.items():
        p = asdict(replace(preset_sampling(g, presets), **asdict(c)))
        print(f"chosen for {V.display_name(g)}: {c.describe()}")
        lines.append(f"[{g}]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in p.items() if v != default[k] and v is not None]
        lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
