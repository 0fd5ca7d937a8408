"""Naive full re-run per token (as the reference generates) versus our KV-cached decoding.

Same weights, same prompt, same length, same sampling, side by side in one run:

    python bench/generate.py --tokens 512 --batch 1          # the published 103M shape, random weights
    python bench/generate.py --checkpoint model.pt --batch 16 --skip-naive

The last line is machine-readable: naive_tokens_per_s=… cached_tokens_per_s=… speedup=…

With --device or --dtype (generator/device.py), a sweep on that device instead: tokens/s of the
naive loop, the cached decoder stepping eagerly, and (on CUDA) the cached decoder replaying CUDA
graphs, at each of --batches, each with its share of the memory-bandwidth roofline: the bytes a
step cannot avoid reading (the weights it multiplies, each row's keys and values, the relative
table's rows) over the measured step time, against the bandwidth a plain copy reaches on that
device (measured here, unless --bandwidth gives it):

    python bench/generate.py --device cuda --dtype bf16 --tokens 512 --batches 1,8,64
    python bench/generate.py --device cpu --checkpoint model.pt --batches 1,8 --skip-naive
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass
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
from generator.device import Placement
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
    decoder's own kernels (generator/packed.py), on the model's device. In fp32 (--exact) the
    pieces must come out the same; bfloat16 rounding magnifies the two attention paths' last-bit
    differences."""
    model = for_decoding(model)
    device = model.embedding.weight.device
    n = requests[0].max_new_tokens
    prompts = [[vocab.genre_token(r.genre), *r.primer] for r in requests]
    tokens = torch.tensor(prompts, device=device)
    state = RowState.build(
        [r.sampling for r in requests], [r.piano_range for r in requests], keys_down(prompts), device
    )
    gens = [torch.Generator(device=device).manual_seed(r.seed) for r in requests]
    for _ in range(n):
        context = tokens[:, -model.config.max_len :]
        logits = model(context)[:, -1]
        probs, order = next_token_probs(logits, state)
        nxt = draw(probs, order, torch.cat([torch.rand(1, generator=g, device=device) for g in gens]))
        state.advance(nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
    return tokens.tolist()


# --- the sweep: --device / --dtype ------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, mib: int = 256, rounds: int = 10) -> float:
    """Bytes per second a plain copy of `mib` MiB moves on `device` (read and write counted),
    the best of `rounds`: what the memory gives a simple stream, the roofline's ceiling."""
    src = torch.ones(mib << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(rounds + 1):  # the first warms the pages up
        synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() / best


def weight_bytes(model: MusicTransformer) -> int:
    """Bytes of weights one decode step multiplies, at the size it reads them: every parameter
    but the embedding table (a step reads one row of it per token) and the relative tables (it
    reads only the rows up to each row's length: counted with the cache)."""
    from generator.packed import PackedLinear

    total = 0
    for module in model.modules():
        if isinstance(module, PackedLinear):  # bfloat16, whatever the model holds
            total += 2 * module.in_features * module.out_features + 2 * module.out_features
        for name, p in module.named_parameters(recurse=False):
            replaced = name in ("in_proj_weight", "in_proj_bias") and getattr(module, "in_proj", None) is not None
            if module is model.embedding or name == "Er" or replaced:
                continue
            total += p.numel() * p.element_size()
    return total


@dataclass
class Run:
    seconds: float
    steps: int
    positions: int  # keys and values read, summed over the steps and rows


def timed_cached(model: MusicTransformer, requests: list[GenerationRequest], graphs: bool) -> Run:
    """The decoder from the first prompt to the last token, counting the positions each step reads."""
    model.cuda_graphs = graphs
    device = model.embedding.weight.device
    try:
        cached(model, [GenerationRequest("calm", max_new_tokens=8, seed=0)])  # warm-up
        decoder = BatchDecoder(model)
        synchronize(device)
        t0 = time.perf_counter()
        decoder.add(requests)
        steps = positions = 0
        while decoder.rows:
            positions += sum(decoder.cache.host_lengths) + len(decoder.rows)  # with the token stepped in
            decoder.step()
            steps += 1
        synchronize(device)
        return Run(time.perf_counter() - t0, steps, positions)
    finally:
        model.cuda_graphs = False


def timed_naive(model: MusicTransformer, requests: list[GenerationRequest]) -> float:
    device = model.embedding.weight.device
    naive(model, [GenerationRequest("calm", max_new_tokens=2, seed=0)])  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    naive(model, requests)
    synchronize(device)
    return time.perf_counter() - t0


def roofline_share(model: MusicTransformer, run: Run, bandwidth: float) -> float:
    """The bytes the steps could not avoid reading, per second of the run, over `bandwidth`."""
    decoding = for_decoding(model)
    cfg = decoding.config
    kv = decoding.new_cache(1, 1).k[0].element_size()
    er = decoding.encoder.layers[0].self_attn.Er.element_size()
    per_position = cfg.n_layers * (2 * cfg.d_model * kv + cfg.head_dim * er)  # keys, values, a relative row
    needed = run.steps * weight_bytes(decoding) + run.positions * per_position
    return needed / run.seconds / bandwidth


def sweep(args: argparse.Namespace) -> None:
    from generator.device import Placement, PlacementError

    try:
        placement = Placement(args.device or "auto", args.dtype or "auto").resolve(args.exact)
    except PlacementError as exc:
        sys.exit(f"error: {exc}")
    device = torch.device(placement.device)
    model = build_model(args).to(device=device, dtype=placement.torch_dtype)
    model.exact_decoding = placement.exact
    cfg = model.config
    if args.bandwidth:
        bandwidth, how = args.bandwidth * 1e9, "given by --bandwidth"
    else:
        bandwidth, how = copy_bandwidth(device), "measured: a copy of 256 MiB, read and write counted"
    print(
        f"model: {cfg.n_layers} layers, d={cfg.d_model}, {cfg.n_heads} heads, ff={cfg.d_ff}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; {describe(model)}"
    )
    print(f"memory bandwidth: {bandwidth / 1e9:.1f} GB/s ({how})")
    print(f"{args.tokens} new tokens per row, prompt {1 + args.prompt}")
    print(f"{'batch':>5}  {'path':<14} {'tokens/s':>10}  {'roofline':>8}")
    paths = ["naive", "cached eager"] + (["cached graphs"] if device.type == "cuda" else [])
    if args.skip_naive:
        paths.remove("naive")
    for batch in args.batches:
        requests = make_requests(args, batch)
        for path in paths:
            if path == "naive":
                seconds, share = timed_naive(model, requests), None
            else:
                run = timed_cached(model, requests, graphs=path == "cached graphs")
                seconds, share = run.seconds, roofline_share(model, run, bandwidth)
            rate = batch * args.tokens / seconds
            shown = "" if share is None else f"{100 * share:7.1f}%"
            print(f"{batch:>5}  {path:<14} {rate:>10.1f}  {shown:>8}", flush=True)
    if device.type != "cuda":
        print("(cached graphs: CUDA only)")


def describe(model: MusicTransformer) -> str:
    """Where and in what the decoder runs the model: 'cuda:0 (NVIDIA H200): weights bf16, …'."""
    from generator.packed import PackedLinear

    decoding = for_decoding(model)
    device = decoding.embedding.weight.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    weights = decoding.embedding.weight.dtype
    products = "bf16" if any(isinstance(m, PackedLinear) for m in decoding.modules()) else short[weights]
    cache = short[decoding.new_cache(1, 1).k[0].dtype]
    return f"{device} ({name}): weights {short[weights]}, products {products}, cache {cache}"


def build_model(args: argparse.Namespace) -> MusicTransformer:
    torch.manual_seed(0)
    if args.checkpoint:
        return load_model(args.checkpoint, Placement("cpu")).model
    return MusicTransformer(
        ModelConfig(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_ff=args.ff)
    ).eval()


def make_requests(args: argparse.Namespace, batch: int) -> list[GenerationRequest]:
    """Top-k 40 with the penalty on, as the bot composes; each row its own seed."""
    gen = torch.Generator().manual_seed(1)
    primer = tuple(torch.randint(0, vocab.END, (args.prompt,), generator=gen).tolist())
    return [
        GenerationRequest(
            vocab.GENRES[b % 4],
            SamplingParams(temperature=1.0 + 0.05 * (b % 3)),
            max_new_tokens=args.tokens,
            seed=b,
            primer=primer,
        )
        for b in range(batch)
    ]


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
    ap.add_argument("--device", help="sweep on this device: auto, cpu, cuda or cuda:N (generator/device.py)")
    ap.add_argument("--dtype", help="sweep in this precision: auto, fp32, bf16 or fp16")
    ap.add_argument("--batches", type=batch_list, default=[1, 8, 64], help="the sweep's batch sizes (1,8,64)")
    ap.add_argument("--bandwidth", type=float, help="the device's memory bandwidth in GB/s (default: measured)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device or args.dtype:
        sweep(args)
        return
    model = build_model(args)
    model.exact_decoding = args.exact
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    requests = make_requests(args, args.batch)
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


def batch_list(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be whole numbers from 1, got {text!r}")
    return sizes


if __name__ == "__main__":
    main()
