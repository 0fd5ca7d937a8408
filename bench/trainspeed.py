"""Training throughput, fp32 against bfloat16 autocast (and torch.compile), side by side in one run.

    python bench/trainspeed.py [--sizes small,medium] [--batch 16] [--seq 512] [--rounds 3] [--compile]

Each round times a few full training steps (forward, loss, backward, clip, AdamW) of each
variant in turn, A B A B, on the same model and batch, so a noisy machine slows all of them
alike; the best round of each is printed with its ratio to fp32. This is what `melomania train
--dtype auto` decides between (it measures a forward and backward pass at start-up).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from generator import vocab as V
from generator.model import ModelConfig, MusicTransformer
from training.train import autocast

SIZES = {
    "small": dict(n_layers=4, d_model=256, n_heads=4, d_ff=1024),  # the shipped model, 3.5 M
    "medium": dict(n_layers=6, d_model=512, n_heads=8, d_ff=2048),  # 19.5 M
}


def variants(with_compile: bool) -> list[tuple[str, str, bool]]:
    out = [("fp32", "fp32", False), ("bf16", "bf16", False)]
    if with_compile:
        out += [("fp32+compile", "fp32", True), ("bf16+compile", "bf16", True)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd steps")
    ap.add_argument("--only", help="comma-separated variants to time (fp32, bf16, fp32+compile, bf16+compile)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, batch {args.batch} × {args.seq}")
    for size in args.sizes.split(","):
        measure(size, args, device)


def measure(size: str, args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    model = MusicTransformer(ModelConfig(max_len=args.seq, **SIZES[size])).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randint(0, V.END, (args.batch, args.seq), device=device)
    forwards = {}
    for name, dtype, compiled in variants(args.compile):
        if args.only and name not in args.only.split(",") and name != "fp32":
            continue
        forwards[name] = (torch.compile(model) if compiled else model, dtype)

    def step(name: str) -> None:
        forward, dtype = forwards[name]
        with autocast(device, dtype):
            logits = forward(x).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for name in forwards:  # warm-up (and compilation) outside the timing
        t0 = time.perf_counter()
        step(name)
        print(f"  {size} {name}: first step {time.perf_counter() - t0:.1f} s")
    best = {name: float("inf") for name in forwards}
    for _ in range(args.rounds):
        for name in forwards:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    tokens = args.batch * args.seq
    base = tokens / best["fp32"]
    print(f"{size} ({params / 1e6:.1f} M parameters): tokens/s, best of {args.rounds} rounds of {args.steps} steps")
    for name, seconds in best.items():
        print(f"  {name:<14} {tokens / seconds:>9,.0f}   {tokens / seconds / base:.2f}× fp32")


if __name__ == "__main__":
    main()
