"""Naive full re-run per token (as the reference generates) versus our KV-cached decoding.

Same weights, same prompt, same length, same sampling, side by side in one run:

    python bench/generate.py --tokens 512 --batch 1          # the published 103M shape, random weights
    python bench/generate.py --checkpoint model.pt --batch 16 --skip-naive

The last line is machine-readable: naive_tokens_per_s=… cached_tokens_per_s=… speedup=…
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator import (
    GenerationRequest,
    ModelConfig,
    MusicTransformer,
    SamplingParams,
    load_model,
    vocab,
)
from generator.decoding import BatchDecoder, keys_down
from generator.packed import for_decoding
from generator.sampling import RowState, draw, next_token_probs


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cached(model: MusicTransformer, requests: list[GenerationRequest]) -> list[list[int]]:
    decoder = BatchDecoder(model)
    rows = decoder.add(requests)
    while decoder.rows:
        decoder.step()
    return [row.tokens for row in rows]


@torch.inference_mode()
def naive(model: MusicTransformer, requests: list[GenerationRequest]) -> list[list[int]]:
    """The reference's loop: the whole sequence through the model for every new token, with the
    decoder's own kernels (generator/packed.py). In fp32 (--exact) the pieces must come out the
    same; bfloat16 rounding magnifies the two attention paths' last-bit differences."""
    model = for_decoding(model)
    n = requests[0].max_new_tokens
    tokens = torch.tensor([[vocab.genre_token(r.genre), *r.primer] for r in requests])
    state = RowState.build(
        [r.sampling for r in requests], [r.piano_range for r in requests], keys_down(tokens.tolist())
    )
    gens = [torch.Generator().manual_seed(r.seed) for r in requests]
    for _ in range(n):
        context = tokens[:, -model.config.max_len :]
        logits = model(context)[:, -1]
        probs, order = next_token_probs(logits, state)
        nxt = draw(probs, order, torch.cat([torch.rand(1, generator=g) for g in gens]))
        state.advance(nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
    return tokens.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--ff", type=int, default=2048)
    ap.add_argument("--checkpoint", help="load weights instead of random ones")
    ap.add_argument("--tokens", type=int, default=512, help="new tokens per row")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=0, help="random primer tokens after the genre token")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-naive", action="store_true", help="time only the cached path")
    ap.add_argument(
        "--exact", action="store_true", help="fp32 products (MELOMANIA_EXACT_DECODING): both paths write the same piece"
    )
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        model = load_model(args.checkpoint).model
    else:
        model = MusicTransformer(
            ModelConfig(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_ff=args.ff)
        ).eval()
    model.exact_decoding = args.exact
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    primer = tuple(torch.randint(0, vocab.END, (args.prompt,)).tolist())
    # Top-k 40 with the penalty on, as the bot composes; each row its own seed.
    requests = [
        GenerationRequest(
            vocab.GENRES[b % 4],
            SamplingParams(temperature=1.0 + 0.05 * (b % 3)),
            max_new_tokens=args.tokens,
            seed=b,
            primer=primer,
        )
        for b in range(args.batch)
    ]
    print(
        f"model: {cfg.n_layers} layers, d={cfg.d_model}, {cfg.n_heads} heads, ff={cfg.d_ff}, "
        f"{params / 1e6:.1f}M parameters; batch {args.batch}, prompt {1 + args.prompt}, "
        f"{args.tokens} new tokens; {torch.get_num_threads()} threads"
    )
    rss_start = peak_rss_mib()

    cached(model, [GenerationRequest("calm", max_new_tokens=8, seed=0)])  # warm-up
    t0 = time.perf_counter()
    fast = cached(model, requests)
    t_cached = time.perf_counter() - t0
    cached_tps = args.batch * args.tokens / t_cached
    rss_cached = peak_rss_mib()
    print(
        f"cached: {t_cached:.2f} s, {cached_tps:.1f} tokens/s total, "
        f"{cached_tps / args.batch:.1f} per row; peak RSS {rss_cached:.0f} MiB"
    )

    if args.skip_naive:
        print(f"naive_tokens_per_s=nan cached_tokens_per_s={cached_tps:.2f} speedup=nan peak_rss_mib={rss_cached:.0f}")
        return
    t0 = time.perf_counter()
    slow = naive(model, requests)
    t_naive = time.perf_counter() - t0
    naive_tps = args.batch * args.tokens / t_naive
    rss_naive = peak_rss_mib()
    same = sum(a == b for a, b in zip(fast, slow))
    print(
        f"naive:  {t_naive:.2f} s, {naive_tps:.2f} tokens/s total; peak RSS {rss_naive:.0f} MiB "
        f"(started at {rss_start:.0f})"
    )
    print(
        f"identical pieces from both paths: {same}/{args.batch}"
        + ("" if args.exact else " (bfloat16 products magnify the paths' last-bit differences; --exact: fp32)")
    )
    print(
        f"naive_tokens_per_s={naive_tps:.2f} cached_tokens_per_s={cached_tps:.2f} "
        f"speedup={naive_tps and cached_tps / naive_tps:.1f} peak_rss_mib={max(rss_cached, rss_naive):.0f}"
    )


if __name__ == "__main__":
    main()
