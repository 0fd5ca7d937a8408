"""The precision of a decode step's products, chosen per batch size by timing them on this CPU.

A decode step of a handful of rows reads every weight matrix once, so it costs about the weights'
bytes over the memory bandwidth: fewer bytes per weight is what makes it faster, where the CPU has
a kernel that reads them fast. Which one has is not in the CPU flags (on the 2-core AVX2 EPYC of
issue 25, oneDNN refuses bfloat16 and torch's weight-only int8 kernel runs 10x slower than fp32,
while fbgemm's dynamic int8 runs 2-4x faster), so each candidate is timed, a decode step at each
batch bucket, and a batch uses its bucket's fastest. The table is measured once per CPU, torch,
thread count, model shape and weights, and kept on disk beside the attention kernels.

Candidates (only the projections and the output layer change; embeddings, norms, attention's
arithmetic and sampling stay fp32; the model's own weights are untouched):
  fp32          F.linear (MKL).
  bf16          oneDNN's prepacked bfloat16 products (packed.PackedLinear), where it runs them.
  fp16          fbgemm's fp16 weights, widened as they are read; fp32 activations.
  int8-dynamic  fbgemm through torch's quantized engine: int8 weights with a scale per output
                channel; each call's activations quantized on the fly, one scale over its rows
                (7 bits: fbgemm's AVX2 products saturate at 8); fp32 out.
  int8-weight   int8 weights with a scale per output channel, fp32 activations
                (aten._weight_int8pack_mm).

A guard runs with the timing: each candidate's next-token distributions against fp32's at every
bucket; one whose mean KL divergence over a bucket's rows exceeds KL_LIMIT is not a candidate.
Choosing per bucket means a seed's piece can depend on its batch's bucket where two buckets chose
differently (and dynamic int8 quantizes a call's rows together), so a test or an operator who
needs one precision forces it (`precisions`, MusicTransformer.decoding_precisions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import vocab as V
from .model import KVCache, MusicTransformer, RelativeSelfAttention

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8-dynamic", "int8-weight")
BUCKETS = (1, 2, 4, 8, 16, 32)  # a batch of n rows runs as the smallest bucket ≥ n (past 32: 32)
KL_LIMIT = 0.01  # nats: mean KL of a candidate's next-token distributions from fp32's
# A candidate must beat fp32 by this share to be chosen: it costs accuracy, and a win smaller
# than this is within the noise of a few timed steps on a shared machine.
MARGIN = 0.10
GIVE_UP = 3.0  # a candidate this many times slower than the best is timed no further
TIMED_STEPS = 2  # per candidate and bucket, after one warm-up; the least counts


def _quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row: (int8 weight, fp32 scales)."""
    w = weight.detach().float()
    scales = w.abs().amax(1).clamp_min(1e-12) / 127
    return torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8), scales


class Fp16Linear(nn.Module):
    """y = x·Wᵀ + b by fbgemm with W stored in fp16 (widened in registers); fp32 in and out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        b = None if bias is None else bias.detach().float().contiguous()
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float().contiguous(), b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16.default(x, self.packed)


class Int8DynamicLinear(nn.Module):
    """y = x·Wᵀ + b by fbgemm (torch's quantized engine): W int8 per output channel, x
    quantized per call; fp32 in and out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        q, scales = _quantize(weight)
        zeros = torch.zeros(len(scales), dtype=torch.long)
        # The packed weight takes a qint8 tensor, a type torch 2.13 deprecates (issue 184982)
        # with nothing yet in its place for this kernel; it exists only for the call below.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
            qweight = torch._make_per_channel_quantized_tensor(q, scales.double(), zeros, 0)
        b = None if bias is None else bias.detach().float().contiguous()
        # Plain attributes, as in PackedLinear: packed weights must not reach state_dict or .to().
        self.packed = torch.ops.quantized.linear_prepack(qweight, b)
        # fbgemm's AVX2 path multiplies u8×s8 pairs into 16 bits, which saturate with 8-bit
        # activations (10 % error measured); torch's own dynamic quantization keeps them to 7.
        self.reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The overload itself, not the packet: no schema matching on every call (a decode step
        # makes one call per projection, and at one row each is a few tens of µs)
        return torch.ops.quantized.linear_dynamic.default(x, self.packed, self.reduce_range)


class Int8WeightLinear(nn.Module):
    """y = x·Wᵀ + b with W int8 per output channel and fp32 activations."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight, self.scales = _quantize(weight)
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float().contiguous()
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class Fp32Linear(nn.Module):
    """y = x·Wᵀ + b on the model's own tensors (MKL)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        # Detached views of the model's parameters, so they are not registered here a second time.
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def make_product(precision: str, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """x ↦ x·Wᵀ + b in `precision`. fp32 shares the model's own tensors."""
    if precision == "fp32":
        return Fp32Linear(weight, bias)
    if precision == "bf16":
        from .packed import PackedLinear

        return PackedLinear(weight, bias)
    if precision == "fp16":
        return Fp16Linear(weight, bias)
    if precision == "int8-dynamic":
        return Int8DynamicLinear(weight, bias)
    if precision == "int8-weight":
        return Int8WeightLinear(weight, bias)
    raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")


_runs: dict[str, bool] = {}


def runs(precision: str) -> bool:
    """Whether this machine's torch runs `precision`'s product at all, and close to fp32 (a
    small product, tried once per process). Fast or not is for `measure` to say."""
    if precision not in _runs:
        gen = torch.Generator().manual_seed(0)
        w, b, x = torch.randn(48, 32, generator=gen), torch.randn(48, generator=gen), torch.randn(3, 32, generator=gen)
        try:
            with torch.inference_mode():
                got = make_product(precision, w, b)(x)
            _runs[precision] = bool((got - F.linear(x, w, b)).abs().max() < 0.5)
        except (RuntimeError, NotImplementedError, AttributeError) as exc:  # no kernel for this CPU or build
            log.debug("%s products do not run here: %s", precision, exc)
            _runs[precision] = False
    return _runs[precision]


def bucket_of(rows: int) -> int:
    return next((b for b in BUCKETS if rows <= b), BUCKETS[-1])


class RoutedLinear(nn.Module):
    """y = x·Wᵀ + b by the product chosen for the call's number of rows (its batch bucket)."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        products: dict[str, nn.Module],
        original: nn.Module | None,
    ):
        super().__init__()
        self.in_features = weight.shape[1]
        self.source = (weight.detach(), None if bias is None else bias.detach())  # for products added later
        # What `uninstall` puts back; not registered as a submodule, or the copy's state_dict
        # would name the model's weights twice.
        object.__setattr__(self, "original", original)
        self.products = products  # precision → product; a plain dict, so no state_dict entries
        self.route: list[Callable[[torch.Tensor], torch.Tensor]] = []
        self.set_route(dict.fromkeys(BUCKETS, "fp32"))

    def set_route(self, by_bucket: dict[int, str], prune: bool = False) -> None:
        """Use `by_bucket[bucket]`'s product for each bucket; `prune`: drop the others."""
        if prune:
            self.products = {p: f for p, f in self.products.items() if p in by_bucket.values()}
        # Indexed by rows, 0 … the largest bucket: one list lookup per call, straight to the
        # product's forward (it has no hooks to run).
        self.route = [self.products[by_bucket[bucket_of(n)]].forward for n in range(BUCKETS[-1] + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        return self.route[min(rows, BUCKETS[-1])](x)


def install(model: MusicTransformer, precisions: Sequence[str]) -> list[RoutedLinear]:
    """Replace `model`'s projections and output layer (a decoding copy's: packed.for_decoding) by
    RoutedLinear holding a product in each of `precisions`, routed to fp32 until `set_routes`."""
    routed = []

    def routed_linear(weight: torch.Tensor, bias: torch.Tensor | None, original: nn.Module | None) -> RoutedLinear:
        products = {p: make_product(p, weight, bias) for p in dict.fromkeys(("fp32", *precisions))}
        routed.append(RoutedLinear(weight, bias, products, original))
        return routed[-1]

    for module in list(model.modules()):
        if isinstance(module, RoutedLinear):  # installed before: add the precisions it lacks
            weight, bias = module.source
            for p in precisions:
                module.products.setdefault(p, make_product(p, weight, bias))
            routed.append(module)
            continue
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, routed_linear(child.weight, child.bias, child))
        if isinstance(module, RelativeSelfAttention) and not isinstance(module.in_proj, RoutedLinear):
            module.in_proj = routed_linear(module.in_proj_weight, module.in_proj_bias, module.in_proj)
    return routed


def uninstall(model: MusicTransformer) -> None:
    """Put back what `install` replaced: the products run as in the model itself."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, RoutedLinear):
                setattr(module, name, child.original)


def set_routes(model: nn.Module, by_bucket: dict[int, str], prune: bool = False) -> None:
    for module in model.modules():
        if isinstance(module, RoutedLinear):
            module.set_route(by_bucket, prune)


@dataclass
class Choice:
    """What a decoding copy runs at each batch bucket, and why."""

    by_bucket: dict[int, str]
    ms: dict[int, dict[str, float]] = field(default_factory=dict)  # bucket → precision → ms per step
    kl: dict[str, float] = field(default_factory=dict)  # precision → KL from fp32, nats (measure)
    screened: dict[str, str] = field(default_factory=dict)  # not timed, and why (screen)
    seconds: float = 0.0  # what measuring took
    source: str = "forced"  # "measured", "cache" (measured before, read from disk), "forced"

    def to_json(self) -> dict:
        return {
            "by_bucket": {str(b): p for b, p in self.by_bucket.items()},
            "ms": {str(b): t for b, t in self.ms.items()},
            "kl": self.kl,
            "screened": self.screened,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, blob: dict) -> Choice:
        return cls(
            by_bucket={int(b): p for b, p in blob["by_bucket"].items()},
            ms={int(b): t for b, t in blob["ms"].items()},
            kl=blob["kl"],
            screened=blob["screened"],
            seconds=blob["seconds"],
            source="cache",
        )

    def table(self) -> str:
        """The measurements as a text table: ms per step, the chosen one starred."""
        names = [p for p in PRECISIONS if any(p in t for t in self.ms.values())]
        lines = [f"{'batch':>5} " + " ".join(f"{p:>13}" for p in names) + "  chosen"]
        for b, chosen in self.by_bucket.items():
            times = self.ms.get(b, {})
            cells = [f"{times[p]:.2f}{'*' if p == chosen else ' '}" if p in times else "-" for p in names]
            lines.append(f"{b:>5} " + " ".join(f"{c:>13}" for c in cells) + f"  {chosen}")
        if self.kl:
            guard = ", ".join(f"{p} {kl:.5f}" for p, kl in self.kl.items())
            lines.append(f"KL from fp32 (nats, mean over a batch, worst batch; limit {KL_LIMIT}): {guard}")
        if self.screened:
            lines.append("not timed: " + ", ".join(f"{p} ({why})" for p, why in self.screened.items()))
        return "\n".join(lines)

    def summary(self) -> str:
        chosen = ", ".join(f"{b}: {p}" for b, p in self.by_bucket.items())
        how = {"measured": f"measured in {self.seconds:.1f} s", "cache": "measured before"}.get(self.source, "forced")
        return f"decoding precision by batch: {chosen} ({how})"


def _prompts(n: int) -> list[list[int]]:
    """Short plausible openings, one per genre: velocity, notes, shifts, releases."""
    out = []
    for i in range(n):
        g = V.GENRES[i % len(V.GENRES)]
        pitch = 55 + 3 * i
        notes = [V.VELOCITY + 20, V.NOTE_ON + pitch, V.NOTE_ON + pitch + 4, V.TIME_SHIFT + 49, V.NOTE_OFF + pitch]
        out.append([V.genre_token(g), *notes, V.NOTE_ON + pitch + 7, V.TIME_SHIFT + 24])
    return out


def _expand(model: MusicTransformer, base: KVCache, rows: int) -> KVCache:
    """A cache of `rows` rows, each a copy of one of `base`'s (in turn)."""
    idx = torch.arange(rows) % base.batch
    cache = model.new_cache(rows, base.capacity)
    for mine, theirs in ((cache.k, base.k), (cache.v, base.v)):
        for i in range(len(mine)):
            mine[i].copy_(theirs[i].index_select(0, idx))
    cache.lengths = base.lengths.index_select(0, idx)
    cache.host_lengths = cache.lengths.tolist()
    return cache


def _kl(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over rows of KL(reference ‖ other) between next-event distributions, nats."""
    p, q = (t[:, : V.VOCAB_SIZE].float().log_softmax(-1) for t in (reference, other))
    return max(0.0, float((p.exp() * (p - q)).sum(-1).mean()))  # not -0.0 where they agree


@torch.inference_mode()
def screen(model: MusicTransformer, precisions: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Which of `precisions` are worth building for the whole model and timing, judged by one
    product of its own shape (its first in_proj) at 1 and 32 rows: (those, {the others: why}).
    Out are the hopeless, GIVE_UP times slower than fp32 at both (torch's weight-only int8 ran
    16x slower at one row on the AVX2 EPYC, 97x at 32), and the beaten, slower at both than
    another candidate by MARGIN (fp16 behind int8 there): building a precision for a 103M
    model costs a second or two. `prepare` times the beaten after all where their betters fail
    the guard."""
    attn = model.encoder.layers[0].self_attn
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    products = {p: make_product(p, weight, bias) for p in dict.fromkeys(("fp32", *precisions))}
    best: dict[str, list[float]] = {p: [] for p in products}
    for rows in (1, BUCKETS[-1]):
        x = torch.linspace(-1, 1, rows * weight.shape[1]).reshape(rows, -1)
        # At 32 rows one that was hopeless at one row gets a single call, kernel building and
        # all: fast enough even so, it is not hopeless; and its warm-up, at 97x fp32, would
        # double what screening costs.
        slow = {p for p in products if best[p] and best[p][0] > GIVE_UP * best["fp32"][0]}
        times: dict[str, list[float]] = {p: [] for p in products}
        for rep in range(4):
            for p, product in products.items():
                if p in slow and rep != 1:
                    continue
                t0 = time.perf_counter()
                product(x)
                if rep:  # the first call builds the kernel
                    times[p].append(time.perf_counter() - t0)
        for p, t in times.items():
            best[p].append(min(t))
    out: dict[str, str] = {}
    for p in products:
        if p != "fp32" and all(t > GIVE_UP * f for t, f in zip(best[p], best["fp32"])):
            out[p] = f"{GIVE_UP:g}x slower than fp32 in one product"
    for p in products:
        rivals = [q for q in products if q not in (p, "fp32", *out)]
        faster = [q for q in rivals if all((1 + MARGIN) * tq < tp for tq, tp in zip(best[q], best[p]))]
        if p != "fp32" and p not in out and faster:
            out[p] = f"slower than {faster[0]} in one product"
    return [p for p in products if p not in out], out


@torch.inference_mode()
def measure(
    model: MusicTransformer, precisions: Sequence[str], buckets: Sequence[int] = BUCKETS
) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    """ms per decode step of each precision at each bucket, and each one's KL from fp32 (the
    mean over a bucket's rows, at its worst bucket). `model` holds RoutedLinear with every
    precision (`install`); it is left routed to fp32. Steps are timed interleaved (each
    precision's step in turn), a few of each. A precision over KL_LIMIT at a bucket, or GIVE_UP
    times slower than the best there, is not timed at larger ones."""
    names = list(dict.fromkeys(("fp32", *precisions)))
    set_routes(model, dict.fromkeys(BUCKETS, "fp32"))
    prompts = [p[: model.config.max_len - 1] for p in _prompts(4)]  # room for the step timed
    _, base = model.prefill(prompts, max(len(p) for p in prompts) + 1)
    ms: dict[int, dict[str, float]] = {}
    kl: dict[str, float] = {}
    alive = list(names)
    for b in buckets:
        cache = _expand(model, base, b)
        start = cache.lengths.clone()
        tokens = (V.NOTE_ON + 48 + torch.arange(b) * 5 % 40).long()
        times: dict[str, list[float]] = {p: [] for p in alive}
        for rep in range(1 + TIMED_STEPS):
            logits = {}
            for p in alive:
                set_routes(model, dict.fromkeys(BUCKETS, p))
                cache.lengths, cache.host_lengths = start.clone(), start.tolist()
                t0 = time.perf_counter()
                logits[p] = model.step(tokens, cache)
                if rep:
                    times[p].append((time.perf_counter() - t0) * 1e3)
            if rep == 0:  # the warm-up's distributions are the guard's: a failing one is timed no more
                for p in alive[1:]:
                    kl[p] = max(kl.get(p, 0.0), _kl(logits["fp32"], logits[p]))
                alive = [p for p in alive if p == "fp32" or kl[p] <= KL_LIMIT]
        # The least of each, not the median: on a shared machine other work only ever adds
        # time, and with three steps the median still caught a neighbour's burst (fp32 at
        # batch 2 timed 6x its batch 1 and 2x its batch 32).
        ms[b] = {p: min(t) for p, t in times.items() if t}
        best = min(ms[b][p] for p in alive)
        alive = [p for p in alive if p == "fp32" or ms[b][p] <= GIVE_UP * best]
    set_routes(model, dict.fromkeys(BUCKETS, "fp32"))
    return ms, kl


def choose(ms: dict[int, dict[str, float]], kl: dict[str, float]) -> dict[int, str]:
    """Per bucket the fastest precision that passed the guard, if it beats fp32 by MARGIN."""
    out = {}
    for b, times in ms.items():
        fair = {p: t for p, t in times.items() if p == "fp32" or kl.get(p, float("inf")) <= KL_LIMIT}
        best = min(fair, key=fair.get)
        out[b] = best if fair[best] <= (1 - MARGIN) * fair["fp32"] else "fp32"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def fingerprint(model: MusicTransformer) -> str:
    """A cheap digest of the weights (64 values of each tensor), to tell checkpoints apart."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1)
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(flat[:: max(1, flat.numel() // 64)].float().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(model: MusicTransformer, precisions: Sequence[str]) -> dict:
    """What a table depends on: the CPU, torch, threads, the kernels in play, the model."""
    from .attention_kernel import cpu_signature

    c = model.config
    return {
        "cpu": _cpu_model(),
        "cpu_flags": hashlib.sha256(cpu_signature().encode()).hexdigest()[:16],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "kv_dtype": str(model.kv_dtype),
        "shape": [c.vocab_size, c.n_layers, c.d_model, c.n_heads, c.d_ff],
        "weights": fingerprint(model),
        "precisions": sorted(precisions),
    }


def _table_path(key: dict) -> Path | None:
    """Where the table for `key` is kept (beside the attention kernels), or None where no cache
    directory could be kept."""
    from .attention_kernel import SCRATCH_PREFIX, cache_dir

    directory = cache_dir()
    if directory.name.startswith(SCRATCH_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return directory / f"precision-{digest}.json"


def _read(path: Path | None, key: dict) -> Choice | None:
    if path is None or not path.is_file():
        return None
    try:
        blob = json.loads(path.read_text())
        if blob.get("key") != key:
            return None
        return Choice.from_json(blob)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or damaged: measured again, and written over


def _write(path: Path | None, key: dict, choice: Choice) -> None:
    if path is None:
        return
    try:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump({"key": key, **choice.to_json()}, f, indent=1)
        os.replace(f.name, path)  # atomic: processes measuring at once each leave a whole file
    except OSError as exc:
        log.warning("cannot keep the decoding precision table (%s); it is measured again next time", exc)


def available(precisions: Sequence[str] | None = None) -> list[str]:
    """The asked precisions (default: all) that run here, fp32 always among them unless exactly
    one that runs was asked for."""
    asked = list(dict.fromkeys(precisions or PRECISIONS))
    unknown = [p for p in asked if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precision {unknown[0]!r}; known: {', '.join(PRECISIONS)}")
    usable = [p for p in asked if p == "fp32" or runs(p)]
    if missing := [p for p in asked if p not in usable]:
        log.info("no %s products on this machine: not a candidate for decoding", ", ".join(missing))
    if len(usable) == 1:
        return usable
    return list(dict.fromkeys(("fp32", *usable)))


def prepare(model: MusicTransformer, precisions: Sequence[str] | None = None, fresh: bool = False) -> Choice:
    """Route a decoding copy's products (installing RoutedLinear) by the choice for this CPU and
    model: measured here, or read from the table kept for it (`fresh`: measure again), or the
    one precision that `precisions` forces."""
    names = available(precisions)
    if len(names) == 1:
        choice = Choice(dict.fromkeys(BUCKETS, names[0]))
        if names[0] != "fp32":
            install(model, names)
            set_routes(model, choice.by_bucket, prune=True)
        return choice
    key = cache_key(model, names)
    path = _table_path(key)
    choice = None if fresh else _read(path, key)
    if choice is None:
        t0 = time.perf_counter()
        timed, screened = screen(model, names)
        install(model, timed)
        ms, kl = measure(model, timed)
        beaten = [p for p, why in screened.items() if why.startswith("slower than")]
        if beaten and any(kl.get(p, 0.0) > KL_LIMIT for p in timed):  # a better one failed the guard
            timed = [p for p in timed if kl.get(p, 0.0) <= KL_LIMIT] + beaten
            install(model, beaten)
            ms, more = measure(model, timed)
            kl |= more
            screened = {p: why for p, why in screened.items() if p not in beaten}
        choice = Choice(choose(ms, kl), ms, kl, screened, time.perf_counter() - t0, "measured")
        _write(path, key, choice)
        log.info("%s\n%s", choice.summary(), choice.table())
    else:
        if chosen := sorted(set(choice.by_bucket.values()) - {"fp32"}):
            install(model, chosen)
        log.info(choice.summary())
    if set(choice.by_bucket.values()) == {"fp32"}:
        uninstall(model)  # no routing left to do: the plain products, no call in between
    else:
        set_routes(model, choice.by_bucket, prune=True)
    return choice


def uses(model: nn.Module) -> set[str]:
    """The precisions a decoding copy's products run in."""
    return {p for m in model.modules() if isinstance(m, RoutedLinear) for p in m.products} or {"fp32"}
