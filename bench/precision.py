"""Every decoding precision side by side in one run: tokens/s at each batch, and the share of
the memory roofline each reaches for its own bytes per step; with --guard, how far each one's
next-token distributions and validation NLL move from fp32 (generator/precision.py).

    python bench/precision.py                                   # the published 103M shape, random weights
    python bench/precision.py --checkpoint generator/checkpoints/melomania-small.pt --guard

"auto" is what the decoder runs: per batch bucket the precision this CPU measured fastest (the
kept table; --fresh measures it again). Each variant composes in its own decoder, the decoders
stepping in turn (A B A B …), and the median step counts; a variant GIVE_UP times slower than
the best at a batch is not timed at larger ones.
Memory bandwidth is a large copy's (read + write) in the same run, on the same threads. Bytes per
step are the weights a step reads: every product's weights in its own precision, the norms, and
one embedding row per row of the batch (the key/value cache, a few MB here, is not counted).
Last line: auto_vs_fp32_1=… (tokens/s at batch 1, auto over fp32) and one per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator import GenerationRequest, ModelConfig, MusicTransformer, load_model
from generator import vocab as V
from generator.decoding import BatchDecoder, prompt_prefix
from generator.packed import PackedLinear, for_decoding
from generator.precision import (
    GIVE_UP,
    PRECISIONS,
    Fp16Linear,
    Fp32Linear,
    Int8DynamicLinear,
    Int8WeightLinear,
    RoutedLinear,
    available,
)


def bandwidth_gb_s(mib: int = 512, reps: int = 5) -> float:
    """GB/s of a large copy, counting the bytes read and written; the best of `reps`."""
    src = torch.ones(mib * 2**18)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / 1e9


def product_bytes(module: nn.Module, rows: int) -> int:
    """Bytes of weights one call with `rows` rows reads."""
    if isinstance(module, RoutedLinear):
        return product_bytes(module.route[min(rows, len(module.route) - 1)].__self__, rows)
    if isinstance(module, nn.Linear | Fp32Linear):
        return 4 * (module.weight.numel() + module.out_features)
    if isinstance(module, PackedLinear | Fp16Linear):
        return 2 * (module.in_features + 1) * module.out_features
    if isinstance(module, Int8DynamicLinear | Int8WeightLinear):
        return (module.in_features + 8) * module.out_features  # int8, a scale and a bias per row
    raise TypeError(f"no byte count for {type(module).__name__}")


def bytes_per_step(model: MusicTransformer, batch: int) -> int:
    total = 0
    for layer in model.encoder.layers:
        attn = layer.self_attn
        if attn.in_proj is not None:
            total += product_bytes(attn.in_proj, batch)
        else:
            total += 4 * (attn.in_proj_weight.numel() + attn.in_proj_bias.numel())
        total += sum(product_bytes(m, batch) for m in (attn.out_proj, layer.linear1, layer.linear2))
        total += 4 * sum(p.numel() for n in (layer.norm1, layer.norm2) for p in n.parameters())
    total += product_bytes(model.Wout, batch) + 4 * 2 * model.config.d_model  # the output layer, last norm
    return total + 4 * batch * model.config.d_model  # embedding rows


def decoder_at(model: MusicTransformer, batch: int, tokens: int) -> BatchDecoder:
    """A decoder composing `batch` rows (mixed genres, each its own seed), started."""
    requests = [GenerationRequest(V.GENRES[i % len(V.GENRES)], max_new_tokens=tokens, seed=i) for i in range(batch)]
    decoder = BatchDecoder(model)
    decoder.add(requests)
    return decoder


def timings(variants: dict[str, MusicTransformer], batches: list[int], steps: int) -> dict:
    """batch → variant → ms per decode step: the median of `steps`, the variants' decoders
    stepping in turn (A B A B …, the order rotating), so a neighbour's burst lands on all of
    them alike."""
    alive = list(variants)
    table = {}
    for b in batches:
        decoders = {name: decoder_at(variants[name], b, steps + 3) for name in alive}
        times: dict[str, list[float]] = {name: [] for name in alive}
        order = list(decoders)
        for i in range(steps + 2):
            order = order[1:] + order[:1]  # each follows each in turn: no variant always runs after the slowest
            for name in order:
                decoder = decoders[name]
                t0 = time.perf_counter()
                decoder.step()
                if i >= 2:  # the first steps build kernels for this batch
                    times[name].append((time.perf_counter() - t0) * 1e3)
        table[b] = {name: statistics.median(t) for name, t in times.items()}
        best = min(table[b].values())
        alive = [n for n in alive if n in ("fp32", "auto") or table[b][n] <= GIVE_UP * best]
    return table


@torch.inference_mode()
def teacher_forced_logits(
    model: MusicTransformer, prefix: list[int], genres: list[str], pieces: list[list[int]]
) -> torch.Tensor:
    """(rows, T, V) next-token logits of each piece (after its genre and `prefix`'s control
    tokens) fed one token a step through the decoder's cached path, all pieces in one batch."""
    prompts = [[V.genre_token(g), *prefix[1:]] for g in genres]
    logits, cache = model.prefill(prompts, model.config.max_len)
    out = [logits]
    T = min(len(p) for p in pieces)
    for t in range(T - 1):
        out.append(model.step(torch.tensor([p[t] for p in pieces]), cache))
    return torch.stack(out, 1)[..., : V.VOCAB_SIZE].float()


def kl_nats(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(reference ‖ other) per position."""
    p, q = reference.log_softmax(-1), other.log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1)


def guard(loaded, variants: dict[str, MusicTransformer], data: Path, windows: int) -> None:
    """Mean KL from fp32 over a real piece per genre (each alone, then the four in one batch),
    and validation NLL per genre, as bench/quality.py measures it."""
    from quality import reference_shard

    from training.train import TrainConfig, validation_nll, validation_set

    model = loaded.model
    prefix = prompt_prefix(model, GenerationRequest("calm", max_new_tokens=1))  # the genre, then unknown controls
    shards = {g: reference_shard(data, g, "real") for g in V.GENRES}
    length = model.config.max_len - len(prefix)
    pieces = []
    for g in V.GENRES:
        shard = shards[g]
        i = next(i for i in range(shard.n_pieces) if len(shard.piece(i)) >= length)
        pieces.append(shard.piece(i)[:length].tolist())
    alone = [teacher_forced_logits(model, prefix, [g], [p]) for g, p in zip(V.GENRES, pieces)]
    reference = {"alone": torch.cat(alone), "batch": teacher_forced_logits(model, prefix, list(V.GENRES), pieces)}
    cfg = TrainConfig.evaluating(model, eval_windows=windows)
    val = validation_set(shards, cfg)
    nll0 = validation_nll(model, val)
    print(
        f"guard: {len(pieces)} real pieces × {length} tokens (one per genre), against plain fp32; "
        f"validation NLL over {windows} windows × {cfg.seq_len} tokens per genre"
    )
    print(f"{'precision':>13} {'KL alone':>9} {'KL max':>9} {'KL batch':>9} {'ΔNLL mean':>10} {'ΔNLL max':>10}")
    for name, m in variants.items():
        if name == "auto":
            continue
        alone = torch.cat([teacher_forced_logits(m, prefix, [g], [p]) for g, p in zip(V.GENRES, pieces)])
        kl_alone = kl_nats(reference["alone"], alone)
        kl_batch = kl_nats(reference["batch"], teacher_forced_logits(m, prefix, list(V.GENRES), pieces))
        nll = validation_nll(m, val)
        delta = [nll[g] - nll0[g] for g in nll0]
        print(
            f"{name:>13} {kl_alone.mean():>9.1e} {kl_alone.mean(1).max():>9.1e} {kl_batch.mean():>9.1e} "
            f"{statistics.fmean(delta):>+10.1e} {max(delta, key=abs):>+10.1e}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="load weights instead of random ones in the shape below")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--ff", type=int, default=2048)
    ap.add_argument("--batches", default="1,2,4,8,16,32")
    ap.add_argument("--steps", type=int, default=48, help="decode steps timed per variant and batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precisions", help="comma-separated, side by side with auto (default: every one that runs)")
    ap.add_argument("--fresh", action="store_true", help="measure the automatic choice again, not the kept table")
    ap.add_argument("--guard", action="store_true", help="KL and NLL against fp32 (needs --checkpoint and data)")
    ap.add_argument("--data", default="data/dataset", help="the dataset with validation shards (for --guard)")
    ap.add_argument("--nll-windows", type=int, default=8, help="validation windows per genre (for --guard)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        loaded = load_model(args.checkpoint)
        model = loaded.model
    else:
        loaded = None
        config = ModelConfig(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_ff=args.ff)
        model = MusicTransformer(config).eval()
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {cfg.n_layers} layers, d={cfg.d_model}, {cfg.n_heads} heads, ff={cfg.d_ff}, "
        f"{params / 1e6:.1f}M parameters; {torch.get_num_threads()} thread(s); median of {args.steps} steps"
    )
    runs = [p for p in PRECISIONS if p in available()]
    print(f"precisions that run here: {', '.join(runs)} (not: {', '.join(set(PRECISIONS) - set(runs)) or '-'})")
    names = [p for p in (args.precisions.split(",") if args.precisions else runs) if p in runs]
    gb_s = bandwidth_gb_s()
    variants = {p: for_decoding(model, precisions=(p,)) for p in names}
    variants["auto"] = for_decoding(model, fresh=args.fresh)
    choice = variants["auto"].decoding_choice
    if choice is not None:
        print(f"automatic choice ({choice.source}):\n{choice.table()}")
    batches = [int(b) for b in args.batches.split(",")]
    table = timings(variants, batches, args.steps)
    gb_s = max(gb_s, bandwidth_gb_s())
    print(f"memory bandwidth (a {512} MiB copy, read + write): {gb_s:.1f} GB/s")
    print(f"{'batch':>5} " + " ".join(f"{n:>24}" for n in variants) + "   (tokens/s, roofline share)")
    for b, row in table.items():
        cells = []
        for name, m in variants.items():
            if name not in row:
                cells.append(f"{'-':>24}")
                continue
            tps = b / row[name] * 1e3
            share = bytes_per_step(m, b) / (row[name] / 1e3) / (gb_s * 1e9)
            cells.append(f"{tps:>12.1f} ({share:>5.0%}) {bytes_per_step(m, b) / 2**20:>4.0f}M")
        print(f"{b:>5} " + " ".join(cells))
    if args.guard:
        if loaded is None:
            sys.exit("--guard needs --checkpoint")
        guard(loaded, {n: m for n, m in variants.items()}, Path(args.data), args.nll_windows)
    print(" ".join(f"auto_vs_fp32_{b}={row['fp32'] / row['auto']:.2f}" for b, row in table.items()))


if __name__ == "__main__":
    main()
