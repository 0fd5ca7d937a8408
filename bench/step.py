"""What one decode step costs at each batch size, fp32 products against the prepacked bfloat16
ones the decoder uses (generator/packed.py), side by side in one run.

    python bench/step.py [--checkpoint PATH] [--tokens 512] [--batches 1,2,4,8,16] [--threads 1]

Every row writes the same number of tokens, so pieces of different density do not blur the
figures. What batching costs is the step at batch B over the step at batch 1: 1.0 would be
free. Last line: step_ratio_8_fp32=… step_ratio_8_packed=… (batch 8 over batch 1).
"""

from __future__ import annotations

import argparse
import time

import torch

from generator import GenerationRequest, load_model, preset_sampling
from generator import vocab as V
from generator.decoding import BatchDecoder
from generator.packed import supported


def ms_per_step(model, batch: int, tokens: int, packed: bool) -> float:
    requests = [
        GenerationRequest(g, preset_sampling(g, model.presets), max_new_tokens=tokens, seed=10 + i)
        for i, g in zip(range(batch), V.GENRES * batch)
    ]
    decoder = BatchDecoder(model, packed=packed)
    decoder.add(requests)
    t0 = time.perf_counter()
    steps = 0
    while decoder.rows:
        decoder.step()
        steps += 1
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--tokens", type=int, default=512, help="new tokens per row (the context slides past max_len)")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the job runner uses 1 for small models)")
    args = ap.parse_args()

    from melomania.settings import Settings

    torch.set_num_threads(args.threads)
    ckpt = args.checkpoint or Settings().checkpoint_path()
    model = load_model(ckpt)
    batches = [int(b) for b in args.batches.split(",")]
    kinds = [False, True] if supported() else [False]
    for packed in kinds:  # warm-up, both ways: allocator, MKL and oneDNN kernels
        ms_per_step(model, 1, 32, packed=packed)
    print(f"checkpoint {ckpt}: {args.tokens} tokens per row, {args.threads} torch thread(s)")
    if not supported():
        print("this CPU has no native bfloat16 products: the decoder keeps fp32, so only fp32 is timed")
    print(
        f"{'batch':>5} "
        + " ".join(f"{name:>22}" for name in ("fp32 ms/step (× first)", "packed ms/step (× first)")[: len(kinds)])
    )
    table = {b: [ms_per_step(model, b, args.tokens, k) for k in kinds] for b in batches}
    base = table[batches[0]]
    for b, row in table.items():
        print(f"{b:>5} " + " ".join(f"{ms:>14.2f} ({ms / base[i]:.2f}×)" for i, ms in enumerate(row)))
    if 8 in table and 1 in table:
        ratios = [table[8][i] / table[1][i] for i in range(len(kinds))]
        print(" ".join(f"step_ratio_8_{name}={r:.2f}" for name, r in zip(("fp32", "packed"), ratios)))


if __name__ == "__main__":
    main()
