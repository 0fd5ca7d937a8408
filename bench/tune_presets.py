"""Choose a checkpoint's sampling presets per genre: the temperature, top-p, truncation and
repetition penalty at which its pieces sound most like their own genre (largest margin of
bench/quality.py's genre-control measure) while as busy as that genre is (notes per second within
a factor of the validation pieces'; none qualifying, the closest), on seeds kept apart from the
ones bench/quality.py reports with.

    python bench/tune_presets.py --checkpoint runs/default/best.pt [--pieces 24] [--out presets.toml]

Then ship them: melomania export-model runs/default/best.pt generator/checkpoints/… --presets presets.toml
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from quality import distance, is_bad, mean_profile, notes_per_second, validation_excerpts

from generator import GenerationRequest, load_model, preset_sampling
from generator import vocab as V
from generator.decoding import generate
from generator.postprocess import postprocess
from generator.tokenizer import decode_notes

TUNING_SEED = 5000  # bench/quality.py reports on seeds from 1000: tuned and judged on different pieces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="data/dataset")
    ap.add_argument("--pieces", type=int, default=24)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--temperatures", default="0.8,0.9,1.0")
    ap.add_argument("--top-ps", default="0.9,0.95,0.99")
    ap.add_argument("--truncate", default="all,pitches", help="what top-k/top-p cut, comma-separated")
    ap.add_argument("--rp-penalties", default="0.05,0", help="repetition penalties (0 turns it off)")
    ap.add_argument("--density", type=float, default=1.5, help="allowed factor off the data's notes per second")
    ap.add_argument("--out", default="presets.toml")
    args = ap.parse_args()

    model = load_model(args.checkpoint).model
    excerpts = {g: validation_excerpts(Path(args.data), g, args.tokens) for g in V.GENRES}
    if missing := [V.display_name(g) for g, e in excerpts.items() if not e]:
        raise SystemExit(f"no validation pieces for {', '.join(missing)} in {args.data}: every genre needs some")
    val = {g: mean_profile(e) for g, e in excerpts.items()}
    val_nps = {g: notes_per_second(e) for g, e in excerpts.items()}
    grid = list(
        itertools.product(
            map(float, args.temperatures.split(",")),
            map(float, args.top_ps.split(",")),
            args.truncate.split(","),
            map(float, args.rp_penalties.split(",")),
        )
    )
    # per genre: (off the data's density by more than allowed, -margin) → lowest is best
    best: dict[str, tuple[tuple[bool, float], float, float, str, float, float]] = {}
    print(f"{'genre':<8} {'temp':>5} {'top_p':>5} {'truncate':>8} {'rp':>5} {'margin':>7} {'bad':>5} {'notes/s':>12}")
    for temperature, top_p, truncate, rp_penalty in grid:
        requests = [
            GenerationRequest(
                g,
                preset_sampling(g, temperature=temperature, top_p=top_p, truncate=truncate, rp_penalty=rp_penalty),
                max_new_tokens=args.tokens,
                seed=TUNING_SEED + i,
            )
            for g in V.GENRES
            for i in range(args.pieces)
        ]
        pieces: dict[str, list] = {g: [] for g in V.GENRES}
        for r, p in zip(requests, generate(model, requests)):
            pieces[r.genre].append(decode_notes(postprocess(p.new_tokens)))
        for g in V.GENRES:
            profile = mean_profile(pieces[g])
            own = distance(profile, val[g])
            margin = min(distance(profile, val[h]) for h in V.GENRES if h != g) - own
            bad = sum(map(is_bad, pieces[g])) / len(pieces[g])
            nps = notes_per_second(pieces[g])
            off = max(nps / val_nps[g], val_nps[g] / nps) if nps else float("inf")
            print(
                f"{V.display_name(g):<8} {temperature:>5.2f} {top_p:>5.2f} {truncate:>8} {rp_penalty:>5.2f}"
                f" {margin:>+7.3f} {bad:>5.0%}"
                f" {nps:>5.1f} (×{nps / val_nps[g]:.2f})"
            )
            rank = (off > args.density, -margin if off <= args.density else off)
            if bad <= 0.1 and (g not in best or rank < best[g][0]):
                best[g] = (rank, temperature, top_p, truncate, margin, rp_penalty)
    lines = [f"# chosen by bench/tune_presets.py for {Path(args.checkpoint).name} on seeds from {TUNING_SEED}"]
    for g, (_, temperature, top_p, truncate, margin, rp_penalty) in best.items():
        lines += [
            f"[{g}]  # margin {margin:+.3f}",
            f"temperature = {temperature}",
            f"top_p = {top_p}",
            f'truncate = "{truncate}"',
            f"rp_penalty = {rp_penalty}",
            "",
        ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
