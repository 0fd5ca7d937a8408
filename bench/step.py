"""What one decode step costs at each batch size, side by side in one run: fp32 throughout; with
the prepacked bfloat16 products alone (generator/packed.py); and as the decoder runs: the
precisions measured fastest here (generator/precision.py; bench/precision.py compares them all)
with the bfloat16 cache and its attention kernel (generator/attention_kernel.py).

    python bench/step.py [--checkpoint PATH] [--tokens 512] [--batches 1,2,4,8,16] [--threads 1]

Every row writes the same number of tokens, so pieces of different density do not blur the
figures. What batching costs is the step at batch B over the step at batch 1: 1.0 would be
free. Last line: step_ratio_8_fp32=… step_ratio_8_packed=… step_ratio_8_decoder=… (batch 8 over 1;
a variant this machine cannot run is left out).
"""

from __future__ import annotations

import argparse
import time

import torch

from generator import GenerationRequest, load_model, preset_sampling
from generator import vocab as V
from generator.decoding import BatchDecoder
from generator.packed import for_decoding


def ms_per_step(model, presets: dict, batch: int, tokens: int) -> float:
    """`model` as the decoder will run it (already through for_decoding, or plain fp32);
    `presets`: the checkpoint's own."""
    requests = [
        GenerationRequest(g, preset_sampling(g, presets), max_new_tokens=tokens, seed=10 + i)
        for i, g in zip(range(batch), V.GENRES * batch)
    ]
    decoder = BatchDecoder(model, packed=False)
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
    loaded = load_model(ckpt)
    model = loaded.model
    batches = [int(b) for b in args.batches.split(",")]
    variants = {
        "fp32": model.eval(),
        "packed": for_decoding(model, kernel=False, precisions=("bf16",)),
        "decoder": for_decoding(model),
    }
    print(f"checkpoint {ckpt}: {args.tokens} tokens per row, {args.threads} torch thread(s)")
    for name, decoding in list(variants.items())[1:]:
        if decoding is model or (name == "decoder" and decoding.kv_dtype is None):
            print(f"{name}: not available on this machine (see the log), so not timed")
            del variants[name]
    for decoding in variants.values():  # warm-up: allocator, MKL and oneDNN kernels
        ms_per_step(decoding, loaded.presets, 1, 32)
    print(f"{'batch':>5} " + " ".join(f"{name + ' ms/step (× first)':>24}" for name in variants))
    presets = loaded.presets
    table = {b: [ms_per_step(decoding, presets, b, args.tokens) for decoding in variants.values()] for b in batches}
    base = table[batches[0]]
    for b, row in table.items():
        print(f"{b:>5} " + " ".join(f"{ms:>16.2f} ({ms / base[i]:.2f}×)" for i, ms in enumerate(row)))
    if 8 in table and 1 in table:
        ratios = [table[8][i] / table[1][i] for i in range(len(variants))]
        print(" ".join(f"step_ratio_8_{name}={r:.2f}" for name, r in zip(variants, ratios)))


if __name__ == "__main__":
    main()
