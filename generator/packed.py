"""Prepacked bfloat16 projections for decoding, one of the precisions a decode step's products
can run in (precision.py times each on this CPU and uses the fastest per batch size).

A decode step multiplies a handful of rows (one per user in the batch) by every weight matrix,
and on one core of the development machine (AMD EPYC, Zen 4 with AVX512-BF16) the fp32 products
(MKL) cost almost in proportion to the rows: a 256×1024 projection takes 15 µs for one row and
62 µs for eight. oneDNN, with the weight reordered once into its blocked bfloat16 layout, takes
19 µs and 25 µs: a batch of eight costs little more than one user alone (bench/step.py).

Only the products change: their inputs and outputs are rounded to bfloat16 (accumulation is
fp32) and widened back; layer norms, attention's arithmetic and sampling stay in fp32, and
validation NLL moves by at most 0.0002 nats. (`for_decoding` also stores the key/value cache in
bfloat16 where the attention kernel builds: attention_kernel.py.) The weights the model holds are
untouched: training, saving and `load_state_dict` see the same parameters. A row's product does
not depend on the other rows in the batch, bit for bit (MKL's fp32 products differ in the last
bits with the number of rows).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from .model import MusicTransformer

EXACT_ROWS = 32  # row counts up to this (a decode step's batch) get their own kernel


def supported() -> bool:
    """True where oneDNN runs bfloat16 products at all (natively, or emulated where the CPU has
    AVX-512 but no AVX512-BF16); whether they are faster than fp32 is measured (precision.py)."""
    from .precision import runs

    return runs("bf16")


class PackedLinear(nn.Module):
    """y = x·Wᵀ + b with W (out, in) reordered for oneDNN in bfloat16; fp32 in and out, the
    values passing through bfloat16 on the way."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        # Plain attributes, not buffers: an opaque oneDNN layout must not reach state_dict or .to().
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().bfloat16(), 1)
        self.bias = None if bias is None else bias.detach().bfloat16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).bfloat16()
        n = rows.shape[0]
        if n == 0:
            return x.new_zeros(*x.shape[:-1], self.out_features)
        # oneDNN builds and keeps a kernel per row count, about 0.7 MB each: prefills of every
        # length from 1 to 512 grew one projection by 360 MB. Past a decode batch, round the rows
        # up to a power of two, so a handful of kernels serve every length (zero rows cost a
        # little arithmetic and change no other row).
        size = n if n <= EXACT_ROWS else 1 << (n - 1).bit_length()
        if size != n:
            rows = F.pad(rows, (0, 0, 0, size - n))
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [None], "")[:n]
        return y.float().reshape(*x.shape[:-1], self.out_features)


def for_decoding(
    model: MusicTransformer, kernel: bool = True, precisions: Sequence[str] | None = None, fresh: bool = False
) -> MusicTransformer:
    """An inference copy of `model` for decoding on this CPU, or `model` itself where nothing
    here would be faster. At each batch bucket the copy's projections run in whichever of
    `precisions` (default: the model's `decoding_precisions`, else every one that runs here; a
    single one forces it) was timed fastest on this CPU for this model (precision.py: bfloat16,
    int8 or fp32; `fresh`: time them again rather than read the kept table). Its key/value
    cache is bfloat16, read by the attention kernel, where a C compiler could build that
    (attention_kernel.py; `kernel=False` keeps the fp32 cache). Only a model on the CPU in fp32
    is changed.

    A model with `exact_decoding` set (MELOMANIA_EXACT_DECODING) keeps fp32 throughout.

    What shares the batch: with the kernel and native bfloat16 a row's step worked on that row
    alone, bit for bit, in every check (the attention kernel, the norms and the sampling do by
    construction; oneDNN's products did, though it promises nothing across row and thread
    counts), so a seed composes the same piece alone or among others. Not so for MKL's fp32
    products, whose last bits vary with the rows, nor for dynamic int8, which quantizes a
    step's rows with one scale, nor where two buckets chose different precisions, nor for
    prompts encoded together, padded. Where attention runs in torch instead (the fp32 cache,
    and exact decoding), it reads every row at the batch's widest, and the last-bit differences
    that brings can tip a draw in a long piece; bfloat16 rounding magnifies them. In our check
    (8 thirty-second pieces joining a running batch one step apart, against each composed
    alone): 8 of 8 the same with the kernel, 8 of 8 in fp32, 6 of 8 with bfloat16 products and
    the fp32 cache.
    """
    weight = model.embedding.weight
    if model.exact_decoding or weight.device.type != "cpu" or weight.dtype != torch.float32 or model.decoding_copy:
        return model
    from .attention_kernel import load
    from .model import RelativeSelfAttention
    from .precision import prepare

    head = model.config.head_dim
    attend = load() if kernel and head >= 16 and head % 16 == 0 else None
    # The copy shares every tensor with the model (no second set of fp32 weights); only its
    # products are new.
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    fast = copy.deepcopy(model, memo=shared).eval()
    if attend is not None:
        for module in fast.modules():
            if isinstance(module, RelativeSelfAttention):
                module.attend = attend
        fast.kv_dtype = torch.bfloat16
    # Timed with the copy's own cache and attention, as it will decode.
    choice = prepare(fast, model.decoding_precisions if precisions is None else precisions, fresh)
    if attend is None and set(choice.by_bucket.values()) == {"fp32"}:
        return model
    fast.decoding_choice = choice
    fast.decoding_copy = True  # already prepared: a decoder handed this copy uses it as it is
    return fast
