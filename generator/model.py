"""A decoder-only Music Transformer with relative attention, laid out like the published
music-composer checkpoint so its state_dict loads with strict=True.

Read top to bottom: config, the key/value cache, relative self-attention, one post-norm layer,
the whole model. Shapes in comments use B batch, T time, H heads, D head size, C model width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import vocab

if TYPE_CHECKING:
    from .attention_kernel import AttentionKernel
    from .controls import ControlSpec
    from .precision import Choice


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = vocab.VOCAB_SIZE
    n_layers: int = 12
    d_model: int = 1024
    n_heads: int = 16
    d_ff: int = 2048
    max_len: int = 2048  # rows of the positional and relative tables, the context length
    dropout: float = 0.1

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class KVCache:
    """Keys and values of every layer for a batch of rows that may have different lengths.

    Row b holds its keys left-aligned in positions 0 … lengths[b]-1. Storage is (B, H, capacity, D)
    per layer so that the live part of each (row, head) is one contiguous block the attention
    matmuls read in place. It starts zeroed: a shorter row's slots past its end get zero attention
    weight, and zero times stale memory that happens to hold NaN would still be NaN.
    """

    def __init__(self, config: ModelConfig, batch: int, capacity: int, device=None, dtype=None):
        if not 0 < capacity <= config.max_len:
            raise ValueError(f"cache capacity must be in 1..{config.max_len}, got {capacity}")
        shape = (batch, config.n_heads, capacity, config.head_dim)
        self.config = config
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        # The same lengths on the host: a step plans from these, so a GPU need not stop to send them.
        self.host_lengths = [0] * batch

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def reserve(self, capacity: int) -> None:
        """Grow the time axis to hold at least `capacity` positions (copies once)."""
        capacity = min(capacity, self.config.max_len)
        if capacity <= self.capacity:
            return
        used = max(self.host_lengths, default=0)
        for store in (self.k, self.v):
            for i, old in enumerate(store):
                new = old.new_zeros(old.shape[:2] + (capacity,) + old.shape[3:])
                new[:, :, :used] = old[:, :, :used]
                store[i] = new

    def select_rows(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (batch indices), in that order."""
        index = torch.tensor(rows, dtype=torch.long, device=self.lengths.device)
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                store[i] = t.index_select(0, index)
        self.lengths = self.lengths.index_select(0, index)
        self.host_lengths = [self.host_lengths[r] for r in rows]

    def extend(self, other: KVCache) -> None:
        """Append the rows of `other` after ours (rows joining a running batch)."""
        self.reserve(other.capacity)
        other.reserve(self.capacity)
        for mine, theirs in ((self.k, other.k), (self.v, other.v)):
            for i in range(len(mine)):
                mine[i] = torch.cat([mine[i], theirs[i]], dim=0)
        self.lengths = torch.cat([self.lengths, other.lengths])
        self.host_lengths = self.host_lengths + other.host_lengths

    def replace_row(self, row: int, other: KVCache) -> None:
        """Overwrite row `row` with the single row held by `other` (a re-encoded window)."""
        n = other.host_lengths[0]
        for mine, theirs in ((self.k, other.k), (self.v, other.v)):
            for i in range(len(mine)):
                mine[i][row, :, :n] = theirs[i][0, :, :n]
        self.lengths[row] = n
        self.host_lengths[row] = n

    def take_rows(self, rows: Sequence[int]) -> KVCache:
        """A new cache holding a copy of `rows`, in that order; ours is left as it is."""
        index = torch.tensor(rows, dtype=torch.long, device=self.lengths.device)
        return KVCache.holding(
            self.config,
            [t.index_select(0, index) for t in self.k],
            [t.index_select(0, index) for t in self.v],
            self.lengths.index_select(0, index),
            [self.host_lengths[r] for r in rows],
        )

    def to(self, device: torch.device | str) -> KVCache:
        """The same rows on `device` (rows parked on the host free a GPU's memory)."""
        move = lambda t: t.to(device)
        return KVCache.holding(
            self.config, [*map(move, self.k)], [*map(move, self.v)], move(self.lengths), list(self.host_lengths)
        )

    @classmethod
    def holding(
        cls,
        config: ModelConfig,
        k: list[torch.Tensor],
        v: list[torch.Tensor],
        lengths: torch.Tensor,
        host_lengths: list[int],
    ) -> KVCache:
        """A cache over tensors that already hold its rows."""
        cache = cls.__new__(cls)
        cache.config, cache.k, cache.v, cache.lengths, cache.host_lengths = config, k, v, lengths, host_lengths
        return cache


def skew(rel: torch.Tensor) -> torch.Tensor:
    """(…, T, T) logits against Er rows for distances T-1 … 0 → (…, T, T) indexed by key.

    Input column r of query i holds q_i·Er[max_len-T+r], i.e. distance T-1-r. The result at key j
    is column T-1-(i-j), the distance i-j; entries above the diagonal are junk and get masked.
    Pad one column on the left, view as (T+1, T), drop the first row: no (T, T, D) tensor needed.
    """
    *lead, T, _ = rel.shape
    padded = F.pad(rel, (1, 0))
    return padded.reshape(*lead, T + 1, T)[..., 1:, :]


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, summed in fp32 whatever the scores' type (bfloat16 on a GPU
    keeps 8 bits, too few for a sum over hundreds of keys), returned in that type."""
    return scores.float().softmax(-1).to(scores.dtype)


class RelativeSelfAttention(nn.Module):
    """Multi-head causal self-attention with one relative-position table Er per layer.

    The logit for query i and key j ≤ i is q_i·k_j + q_i·Er[max_len-1-(i-j)], q scaled first.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        C, self.n_heads, self.head_dim = config.d_model, config.n_heads, config.head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * C, C))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * C))
        self.Er = nn.Parameter(torch.randn(config.max_len, self.head_dim) * self.head_dim**-0.5)
        self.out_proj = nn.Linear(C, C)
        self.dropout = config.dropout
        self.in_proj: nn.Module | None = None  # a faster kernel for the same product (packed.py)
        self.attend: AttentionKernel | None = None  # a step's attention over a bfloat16 cache
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        fast = self.in_proj
        qkv = fast(x) if fast is not None else F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3C)
        q, k, v = qkv.view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3×(B,H,T,D)
        return q * self.head_dim**-0.5, k, v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, D = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, T, H * D))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole sequences (training, prefill). Returns output and this layer's keys and values."""
        T = x.shape[1]
        q, k, v = self._qkv(x)
        Er = self.Er[self.Er.shape[0] - T :]  # distances T-1 … 0
        scores = q @ k.transpose(-2, -1) + skew(q @ Er.transpose(0, 1))  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu_(1)
        scores = scores.masked_fill(causal, float("-inf"))
        att = F.dropout(softmax(scores), self.dropout, self.training)
        return self._merge(att @ v), k, v

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: StepPlan):
        """One new token per row, attending to the cache. x is (B, 1, C)."""
        q, k, v = self._qkv(x)  # (B, H, 1, D)
        if plan.uniform is not None:
            k_cache[:, :, plan.uniform] = k[:, :, 0]
            v_cache[:, :, plan.uniform] = v[:, :, 0]
        else:
            k_cache[plan.rows, :, plan.positions] = k[:, :, 0].to(k_cache.dtype)
            v_cache[plan.rows, :, plan.positions] = v[:, :, 0].to(v_cache.dtype)
        if self.attend is not None:  # a bfloat16 cache: the kernel does the rest, row by row
            return self._merge(self.attend(q[:, :, 0], k_cache, v_cache, self.Er, plan.valid)[:, :, None])
        T = plan.width
        Er = self.Er[self.Er.shape[0] - T :]  # distances T-1 … 0
        rel = q @ Er.transpose(0, 1)  # (B, H, 1, T): one small product, not a re-run
        if plan.shift is not None:  # rows shorter than the widest see their distances shifted
            rel = rel.gather(-1, plan.shift)
        if plan.mask is not None:
            rel = rel.masked_fill(plan.mask, float("-inf"))
        keys, values = k_cache[:, :, :T], v_cache[:, :, :T]  # views, no copy
        # keys @ q, not q @ keysᵀ: the same dot products, but MKL reads each (row, head)'s keys
        # in their stored order; 8 rows at once step 8 % faster (the keys no longer fit in cache).
        scores = (keys @ q.transpose(-2, -1)).transpose(-2, -1) + rel
        return self._merge(softmax(scores) @ values)


@dataclass
class StepPlan:
    """Indexing shared by every layer for one decode step, computed once from the row lengths."""

    width: int  # keys to attend to: the longest row after this step
    uniform: int | None  # the write position when every row has the same length
    valid: torch.Tensor  # (B,) keys each row attends to: its length after this step
    rows: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    shift: torch.Tensor | None = None  # (B, 1, 1, T) gather index into the relative logits
    mask: torch.Tensor | None = None  # (B, 1, 1, T) True where a key is past the row's end

    @classmethod
    def for_lengths(
        cls,
        lengths: torch.Tensor,
        n_heads: int,
        kernel: bool = False,
        host: Sequence[int] | None = None,
        width: int | None = None,
    ) -> StepPlan:
        """`kernel`: attention runs in the attention kernel, which needs only `valid`. `host`: the
        same lengths as ints, read instead of the tensor, so a GPU need not stop to send them.
        `width`: attend to this many keys whatever the lengths (each row masked past its end),
        so that every step has the same shapes and a CUDA graph can replay it; nothing is read
        from `lengths` then."""
        if width is None:
            lo, hi = (min(host), max(host)) if host is not None else (int(lengths.min()), int(lengths.max()))
            if lo == hi:
                return cls(width=hi + 1, uniform=hi, valid=lengths + 1)
            width = hi + 1
        rows = torch.arange(len(lengths), device=lengths.device)
        if kernel:
            return cls(width=width, uniform=None, valid=lengths + 1, rows=rows, positions=lengths)
        B, T = lengths.shape[0], width
        j = torch.arange(T, device=lengths.device)
        # key j of row b is at distance lengths[b]-j; the relative logits are laid out for
        # distance T-1-c at column c, so row b reads column j + (T-1-lengths[b]).
        shift = (j[None, :] + (T - 1 - lengths)[:, None]).clamp_(max=T - 1)
        return cls(
            width=T,
            uniform=None,
            valid=lengths + 1,
            rows=rows,
            positions=lengths,
            shift=shift[:, None, None, :].expand(B, n_heads, 1, T),
            mask=(j[None, :] > lengths[:, None])[:, None, None, :],
        )


class EncoderLayer(nn.Module):
    """Post-norm: x = norm1(x + attn(x)); x = norm2(x + ff(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = RelativeSelfAttention(config)
        self.linear1 = nn.Linear(config.d_model, config.d_ff)
        self.linear2 = nn.Linear(config.d_ff, config.d_model)
        self.norm1 = nn.LayerNorm(config.d_model)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))

    def forward(self, x: torch.Tensor):
        a, k, v = self.self_attn(x)
        return self._feed_forward(self.norm1(x + self.dropout(a))), k, v

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, plan: StepPlan):
        return self._feed_forward(self.norm1(x + self.self_attn.step(x, k_cache, v_cache, plan)))


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)


class PositionalEncoding(nn.Module):
    """The fixed sinusoidal table, stored (max_len, 1, C) as the published checkpoint has it."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        pos = torch.arange(config.max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, config.d_model, 2).float() * (-math.log(10000.0) / config.d_model))
        pe = torch.zeros(config.max_len, 1, config.d_model)
        pe[:, 0, 0::2] = torch.sin(pos * freq)
        pe[:, 0, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pe", pe)


class MusicTransformer(nn.Module):
    kv_dtype: torch.dtype | None = None  # the cache's type, when not the weights' (packed.for_decoding)
    decoding_copy: bool = False  # made by packed.for_decoding, ready to decode as it is
    # Set by checkpoint.load_model; they live on the model, not beside it, because decoding reads
    # them wherever the model goes (a decoding copy, a worker's BatchDecoder).
    controls: ControlSpec | None = None  # the control tokens past the events; None: it takes none
    exact_decoding: bool = False  # fp32 products when decoding, even where bfloat16 ones are faster
    # Decode over a cache allocated once, in buckets of fixed shapes, replayed as CUDA graphs on a
    # GPU (graphs.py; elsewhere the buckets run eagerly, which only tests want).
    cuda_graphs: bool = False
    # The precisions decoding may choose among (precision.py); None: every one that runs here.
    decoding_precisions: tuple[str, ...] | None = None
    decoding_choice: Choice | None = None  # what a decoding copy chose per batch bucket, and why

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.positional_encoding = PositionalEncoding(config)
        self.transformer = nn.ModuleDict({"encoder": Encoder(config)})
        self.Wout = nn.Linear(config.d_model, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    @property
    def encoder(self) -> Encoder:
        return self.transformer["encoder"]

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) token ids → (B, T, V) logits. With an empty `cache`, also fill it (prefill);
        rows padded on the right are fine: causal attention never looks at the padding."""
        T = tokens.shape[1]
        if self.config.max_len < T:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.config.max_len})")
        x = self.dropout(self.embedding(tokens) + self.positional_encoding.pe[:T, 0])
        for i, layer in enumerate(self.encoder.layers):
            x, k, v = layer(x)
            if cache is not None:
                cache.k[i][:, :, :T] = k
                cache.v[i][:, :, :T] = v
        return self.Wout(self.encoder.norm(x))

    def step(self, tokens: torch.Tensor, cache: KVCache, width: int | None = None) -> torch.Tensor:
        """Feed one token per row at position cache.lengths[b]; (B,) ids → (B, V) logits.
        `width`: attend to that many keys, whatever the lengths below it (StepPlan.for_lengths);
        the host lengths are then left to the caller, since a replayed graph cannot count them."""
        kernel = all(layer.self_attn.attend is not None for layer in self.encoder.layers)
        plan = StepPlan.for_lengths(cache.lengths, self.config.n_heads, kernel, cache.host_lengths, width)
        if plan.width > cache.capacity:
            raise ValueError(f"cache holds {cache.capacity} positions, step needs {plan.width}")
        x = self.embedding(tokens)[:, None] + self.positional_encoding.pe[cache.lengths]  # (B, 1, C)
        for i, layer in enumerate(self.encoder.layers):
            x = layer.step(x, cache.k[i], cache.v[i], plan)
        cache.lengths += 1
        if width is None:
            cache.host_lengths = [n + 1 for n in cache.host_lengths]
        return self.Wout(self.encoder.norm(x[:, 0]))

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        p = self.embedding.weight
        return KVCache(self.config, batch, capacity, device=p.device, dtype=self.kv_dtype or p.dtype)

    def prefill(self, sequences: list[list[int]], capacity: int) -> tuple[torch.Tensor, KVCache]:
        """Encode prompts of any lengths into a fresh cache; returns each row's last logits (B, V)."""
        lengths = [len(s) for s in sequences]
        if min(lengths) < 1:
            raise ValueError("every prompt needs at least one token (the genre)")
        device = self.embedding.weight.device
        T = max(lengths)
        tokens = torch.full((len(sequences), T), vocab.PAD, dtype=torch.long)
        for b, s in enumerate(sequences):
            tokens[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        cache = self.new_cache(len(sequences), max(capacity, T))
        logits = self(tokens.to(device), cache)  # built on the host, sent in one copy
        last = torch.as_tensor(lengths, device=device) - 1
        cache.lengths = last + 1
        cache.host_lengths = list(lengths)
        return logits[torch.arange(len(sequences), device=device), last], cache
