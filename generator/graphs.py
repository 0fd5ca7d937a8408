"""Decode steps over a cache allocated once, in buckets of fixed shapes, replayed as CUDA graphs
(MELOMANIA_CUDA_GRAPHS=1 on a GPU).

A decode step of a small model is a few hundred small kernels, each launched from Python; on a
GPU the step waits on the launches, not on memory. A CUDA graph records one step's launches once
and replays them in one call, but only over fixed shapes and addresses. So the cache is allocated
once for every row the decoder may hold (`StaticKVCache`: rows joining, leaving or parked are
copied within it), and a step runs in a bucket: the rows rounded up to a power of two, the keys
read to a power of two from 64, every row masked past its own end (StepPlan.for_lengths with a
width). Rows past the live ones are padding, PAD at position 0, and their logits are dropped.

`BucketedSteps(capture=False)` runs the same buckets eagerly: what the CPU tests check, and the
way to tell a graph's fault from the buckets'.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import vocab
from .model import KVCache, ModelConfig, MusicTransformer

MIN_WIDTH = 64  # the narrowest bucket of keys: shorter rows read a little more, in fewer graphs


def bucket(n: int, limit: int, least: int = 1) -> int:
    """`n` rounded up to a power of two (at least `least`), at most `limit`."""
    return min(limit, max(least, 1 << (max(n, 1) - 1).bit_length()))


class StaticKVCache(KVCache):
    """A KVCache whose storage never moves: `slots` rows of the whole context, of which the first
    `batch` are live. Rows leaving or joining are copied within it; it grows (new storage, and
    new graphs) only when more rows join than it has slots."""

    def __init__(self, config: ModelConfig, slots: int, device=None, dtype=None):
        super().__init__(config, slots, config.max_len, device, dtype)
        self.slot_k, self.slot_v, self.slot_lengths = self.k, self.v, self.lengths
        self.generation = 0  # bumped when the storage is replaced: graphs over the old one are void
        self._live(0)

    @property
    def slots(self) -> int:
        return self.slot_k[0].shape[0]

    def _live(self, n: int) -> None:
        self.k = [t[:n] for t in self.slot_k]
        self.v = [t[:n] for t in self.slot_v]
        self.lengths = self.slot_lengths[:n]
        self.host_lengths = self.host_lengths[:n]

    def view(self, rows: int) -> KVCache:
        """The first `rows` slots, live or not, as a cache a step can run on (a bucket)."""
        return KVCache.holding(
            self.config,
            [t[:rows] for t in self.slot_k],
            [t[:rows] for t in self.slot_v],
            self.slot_lengths[:rows],
            [*self.host_lengths, *[0] * (rows - self.batch)],
        )

    def clear(self) -> None:
        self.host_lengths = []
        self._live(0)

    def reserve(self, capacity: int) -> None:
        """Nothing to do: every slot holds the whole context."""

    def select_rows(self, rows: Sequence[int]) -> None:
        used = max((self.host_lengths[r] for r in rows), default=0)
        index = torch.tensor(rows, dtype=torch.long, device=self.slot_lengths.device)
        for store in (self.slot_k, self.slot_v):
            for t in store:
                t[: len(rows), :, :used] = t[: self.batch, :, :used].index_select(0, index)
        self.slot_lengths[: len(rows)] = self.lengths.index_select(0, index)
        self.host_lengths = [self.host_lengths[r] for r in rows]
        self._live(len(rows))

    def extend(self, other: KVCache) -> None:
        n, m = self.batch, other.batch
        if n + m > self.slots:
            self._grow(bucket(n + m, 1 << 30))
        width = min(other.capacity, self.capacity)
        for mine, theirs in ((self.slot_k, other.k), (self.slot_v, other.v)):
            for t, o in zip(mine, theirs):
                t[n : n + m, :, :width] = o[:, :, :width].to(t.device)
        self.slot_lengths[n : n + m] = other.lengths.to(self.slot_lengths.device)
        self.host_lengths = [*self.host_lengths, *other.host_lengths]
        self._live(n + m)

    def _grow(self, slots: int) -> None:
        live, host = self.take_rows(range(self.batch)), self.host_lengths
        fresh = StaticKVCache(self.config, slots, self.slot_lengths.device, self.slot_k[0].dtype)
        self.slot_k, self.slot_v, self.slot_lengths = fresh.slot_k, fresh.slot_v, fresh.slot_lengths
        self.generation += 1
        self.host_lengths = []
        self._live(0)
        self.extend(live)
        assert self.host_lengths == host


class BucketedSteps:
    """`model.step` over a StaticKVCache in buckets of fixed shapes; with `capture`, each bucket
    is recorded as a CUDA graph the first time it is needed and replayed from then on."""

    def __init__(self, model: MusicTransformer, cache: StaticKVCache, capture: bool):
        if capture and cache.slot_lengths.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.model, self.cache, self.capture = model, cache, capture
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.generation = -1
        self.pool = torch.cuda.graph_pool_handle() if capture else None

    def shape(self, rows: int, longest: int) -> tuple[int, int]:
        """The bucket (rows, keys) a step of `rows` live rows, the longest `longest` long, runs in."""
        max_len = self.model.config.max_len
        return bucket(rows, self.cache.slots), bucket(longest + 1, max_len, least=min(MIN_WIDTH, max_len))

    def __call__(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if cache is not self.cache:
            raise ValueError("bucketed steps run on the cache they were built with")
        n = cache.batch
        rows, width = self.shape(n, max(cache.host_lengths))
        if self.generation != cache.generation:  # new storage: every graph, and the inputs, anew
            self.graphs.clear()
            self.generation = cache.generation
            self.tokens = torch.full((cache.slots,), vocab.PAD, dtype=torch.long, device=cache.slot_lengths.device)
        self.tokens[:n] = tokens
        self.tokens[n:rows] = vocab.PAD
        cache.slot_lengths[n:rows] = 0  # padding rows start each step afresh, at position 0
        if self.capture:
            graph, logits = self.graphs.get((rows, width)) or self._record(rows, width)
            graph.replay()
        else:
            logits = self._step(rows, width)
        cache.host_lengths = [length + 1 for length in cache.host_lengths]
        return logits[:n]

    def _step(self, rows: int, width: int) -> torch.Tensor:
        return self.model.step(self.tokens[:rows], self.cache.view(rows), width=width)

    def _record(self, rows: int, width: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        # Warm-up runs (cuBLAS picks its kernels, the allocator its blocks) on a side stream, as
        # capture requires; they write keys past each row's end, which the real step overwrites,
        # and advance the lengths, which are put back.
        lengths = self.cache.slot_lengths[:rows].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(rows, width)
                self.cache.slot_lengths[:rows] = lengths
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self._step(rows, width)
        self.cache.slot_lengths[:rows] = lengths  # capture records; it does not run
        self.graphs[(rows, width)] = (graph, logits)
        return graph, logits
