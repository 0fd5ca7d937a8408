"""Batched, KV-cached generation: rows join and leave a running batch between steps.

`BatchDecoder` is the engine the job runner drives (continuous batching); `generate` runs a
fixed list of requests to the end. Every row carries its own sampling values, genre, length,
seed and random stream, so what a row draws never depends on the other rows' draws. With the
attention kernel and bfloat16 products (packed.for_decoding) its logits did not either, bit for
bit, in every check. Where attention runs in torch instead, it reads every row at the longest
row's width, and a float sum over more (zero) terms may round differently: short pieces come
out the same in any batch; a piece of a thousand events or more sometimes tips one draw and
goes its own way from there.

The decoder runs wherever the model is (generator/device.py), in torch ops on a GPU: each row's
random stream is a generator on that device, and a step waits for the device once, for the
tokens it sampled. A seed's stream, and the arithmetic, differ between devices and precisions,
so a seed writes another piece on a GPU than on the CPU; recipes name the device.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch

from . import vocab as V
from .controls import ControlError
from .graphs import BucketedSteps, StaticKVCache
from .model import KVCache, MusicTransformer
from .packed import for_decoding
from .params import GenerationRequest, draw_seed
from .sampling import RowState, draw, next_token_probs

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Row:
    """One piece being composed. `tokens` starts with the genre token (and the control tokens of
    a model that has them: `prefix` ids in all), then the primer."""

    request: GenerationRequest
    tokens: list[int]
    prompt_length: int
    generator: torch.Generator
    prefix: int = 1
    seconds: float = 0.0
    windows: int = 0  # how many times the context slid
    cancelled: bool = False  # set by the caller; the row leaves the batch at the next step
    tag: object = None  # the caller's handle (a job id, say)

    @property
    def new_tokens(self) -> list[int]:
        return self.tokens[self.prompt_length :]

    @property
    def done(self) -> bool:
        if self.cancelled:
            return True
        r = self.request
        n = len(self.tokens) - self.prompt_length
        if n >= r.token_budget:
            return True
        return r.max_seconds is not None and self.seconds >= r.max_seconds

    @property
    def progress(self) -> float:
        """Fraction done in [0, 1], by whichever length was asked for."""
        r = self.request
        n = len(self.tokens) - self.prompt_length
        if r.max_seconds is not None and r.max_new_tokens is None:
            return min(1.0, self.seconds / r.max_seconds)
        return min(1.0, n / r.token_budget)


ProgressCallback = Callable[[int, int, float], None]
"""Called after every step with the tokens written so far, the tokens expected in all, and the
seconds of music written so far (each piece's up to the length it asked for)."""


def window(tokens: Sequence[int], max_len: int, prefix: int = 1) -> list[int]:
    """The context to re-encode once a row fills the model's window: its genre (and control)
    tokens and the most recent half (Jukebox-style windowed sampling), so length is bounded by
    time, not context.

    Notes still held where the window is cut are restated first (velocity, note-on): without them
    the model cannot know those keys are down, never releases them, and they drone to the end.
    """
    budget = max_len // 2 - prefix
    held = held_notes(tokens[prefix : max(prefix, len(tokens) - budget)])[-(max_len // 8) :]  # the latest struck
    restated = [t for pitch, vel_bin in held for t in (V.VELOCITY + vel_bin, V.NOTE_ON + pitch)]
    keep = budget - len(restated)
    return [*tokens[:prefix], *restated, *tokens[-keep:]]


def prompt_prefix(model: MusicTransformer, request: GenerationRequest) -> list[int]:
    """The genre token, then the control tokens where the model has a control vocabulary.
    Controls asked of a model without one are an error, not silently ignored."""
    spec = model.controls
    controls = request.sampling.controls
    if spec is None:
        if controls.any:
            raise ControlError(f"this checkpoint has no attribute controls; compose without {controls.describe()}")
        return [V.genre_token(request.genre)]
    return spec.prefix(request.genre, controls)


def held_notes(tokens: Sequence[int]) -> list[tuple[int, int]]:
    """(pitch, velocity bin) of the notes sounding after `tokens`, in the order they were struck."""
    velocity_bin = V.velocity_to_bin(V.DEFAULT_VELOCITY)
    held: dict[int, int] = {}
    for t in tokens:
        if V.is_velocity(t):
            velocity_bin = t - V.VELOCITY
        elif V.is_note_on(t):
            held.setdefault(t - V.NOTE_ON, velocity_bin)
        elif V.is_note_off(t):
            held.pop(t - V.NOTE_OFF, None)
    return list(held.items())


def keys_down(prompts: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, 128) bool: the keys each prompt leaves down."""
    down = torch.zeros(len(prompts), V.N_PITCHES, dtype=torch.bool)
    for b, prompt in enumerate(prompts):
        for pitch, _ in held_notes(prompt):
            down[b, pitch] = True
    return down


Step = Callable[[torch.Tensor, KVCache], torch.Tensor]
"""A decode step: the pending token of every row, the cache → each row's next logits (B, V)."""


@dataclass(eq=False)
class Parked:
    """Rows taken out of the batch when a step ran out of memory, with everything they need to
    go on exactly where they stopped: their cache (on the host), sampling state, pending token."""

    rows: list[Row]
    cache: KVCache
    state: RowState
    pending: torch.Tensor

    def split(self, n: int) -> tuple[Parked, Parked]:
        """The first `n` rows, and the rest."""
        first, rest = list(range(n)), list(range(n, len(self.rows)))
        return (
            Parked(self.rows[:n], self.cache.take_rows(first), self.state.take_rows(first), self.pending[:n]),
            Parked(self.rows[n:], self.cache.take_rows(rest), self.state.take_rows(rest), self.pending[n:]),
        )


class BatchDecoder:
    """Continuous batching over one KV cache. Call `add` any time, `step` until `rows` is empty.

    A step, a prompt's encoding or a full row's window re-encoded that runs out of memory does not
    fail the rows: the batch is halved, the rows taken out are parked with their state and rejoin,
    in order, as rows finish, and from then on no more than the rows that fitted share a step
    (`room`), until the batch runs empty. A parked row goes on from exactly where it stopped, so it
    writes what it would have in a batch that fitted (as far as a row's piece is its own whatever
    the batch: above)."""

    def __init__(
        self,
        model: MusicTransformer,
        initial_capacity: int = 256,
        packed: bool = True,
        window_threads: int | None = None,
        before_model: Callable[[int, str], None] | None = None,
    ):
        """`packed`: bfloat16 products and cache where this machine has them (packed.for_decoding);
        False keeps fp32. `window_threads`: torch threads for re-encoding a full row's window, for
        a caller that decodes on fewer (None: the same). `before_model`: called before the model
        runs with the rows in memory and what runs: "prompts" (encoded together), "step" (the
        batch) or "window" (one full row's window re-encoded beside the batch's cache); an
        out-of-memory error raised there is handled as one raised by the model (the seam where
        tests inject one)."""
        self.model = for_decoding(model.eval()) if packed else model.eval()
        self.device = self.model.embedding.weight.device
        self.max_len = model.config.max_len
        self.window_threads = window_threads
        self.before_model = before_model
        self.rows: list[Row] = []
        self.cache: KVCache | None = None
        self.state: RowState | None = None
        self.pending: torch.Tensor | None = None  # (B,) last sampled token, not yet in the cache
        self.initial_capacity = initial_capacity
        self.parked: list[Parked] = []
        self.limit: int | None = None  # the most rows a step is known to fit in memory; None: no limit seen
        self._steps: BucketedSteps | None = None  # with a cache allocated once (MELOMANIA_CUDA_GRAPHS)
        if self.model.cuda_graphs:  # captured as graphs on a GPU; elsewhere the same buckets, run eagerly
            static = StaticKVCache(
                self.model.config, 8, self.device, self.model.kv_dtype or self.model.embedding.weight.dtype
            )
            self._steps = BucketedSteps(self.model, static, capture=self.device.type == "cuda")

    @property
    def all_rows(self) -> list[Row]:
        """Every row being composed: the batch, then the parked ones."""
        return [*self.rows, *(row for group in self.parked for row in group.rows)]

    def room(self, max_batch: int) -> int:
        """How many rows may join now, `max_batch` at most in all: none while rows are parked."""
        cap = max_batch if self.limit is None else min(max_batch, self.limit)
        return 0 if self.parked else max(0, cap - len(self.rows))

    @torch.inference_mode()
    def add(self, requests: Sequence[GenerationRequest], tags: Sequence[object] | None = None) -> list[Row]:
        """Encode the new requests' prompts and sample their first tokens; they join the batch."""
        if not requests:
            return []
        new_rows = []
        # A request without a seed gets one now, recorded in its row, so every piece can be reproduced.
        requests = [r if r.seed is not None else replace(r, seed=draw_seed()) for r in requests]
        for i, r in enumerate(requests):
            prefix = prompt_prefix(self.model, r)
            prompt = [*prefix, *r.primer]
            # on the model's device: its random stream is the device's (a GPU's differs from the CPU's)
            g = torch.Generator(device=self.device)
            g.manual_seed(r.seed)
            new_rows.append(Row(r, prompt, len(prompt), g, len(prefix), tag=None if tags is None else tags[i]))
        prompts = [
            row.tokens if len(row.tokens) < self.max_len else window(row.tokens, self.max_len, row.prefix)
            for row in new_rows
        ]
        capacity = min(
            self.max_len,
            max(len(p) for p in prompts) + min(max(r.token_budget for r in requests), self.initial_capacity),
        )
        logits, cache = self._prefill(prompts, capacity)
        down = keys_down([row.tokens[row.prefix :] for row in new_rows])
        state = RowState.build([r.sampling for r in requests], [r.piano_range for r in requests], down, self.device)
        first = self._sample(logits, state, new_rows)
        self._join(new_rows, cache, state, first)
        return new_rows

    def _join(self, rows: list[Row], cache: KVCache, state: RowState, pending: torch.Tensor) -> None:
        if self.cache is None:
            self.rows, self.state, self.pending = list(rows), state, pending  # not the caller's list
            if self._steps is None:
                self.cache = cache
                return
            self.cache = self._steps.cache
            self.cache.clear()
            self.cache.extend(cache)
            return
        self.rows += rows
        self.cache.extend(cache)
        self.state.extend(state)
        self.pending = torch.cat([self.pending, pending])

    def _prefill(self, prompts: list[list[int]], capacity: int) -> tuple[torch.Tensor, KVCache]:
        """model.prefill, in halves where the prompts together do not fit in memory."""
        try:
            if self.before_model is not None:
                self.before_model(len(prompts), "prompts")
            return self.model.prefill(prompts, capacity)
        except torch.OutOfMemoryError:
            if len(prompts) == 1:
                raise
            free_cached_memory(self.device)
        half = len(prompts) // 2
        logits, cache = self._prefill(prompts[:half], capacity)
        more, rest = self._prefill(prompts[half:], capacity)
        cache.extend(rest)
        return torch.cat([logits, more]), cache

    def _sample(self, logits: torch.Tensor, state: RowState, rows: list[Row]) -> torch.Tensor:
        # A model with control tokens has more outputs than events; it never writes those.
        probs, order = next_token_probs(logits[:, : V.VOCAB_SIZE], state)
        uniforms = torch.cat([torch.rand(1, generator=row.generator, device=self.device) for row in rows])
        tokens = draw(probs, order, uniforms)
        state.advance(tokens)
        # The one wait for the device each step: the tokens decide which rows are finished.
        for row, tok in zip(rows, tokens.tolist()):
            row.tokens.append(tok)
            if V.is_time_shift(tok):
                row.seconds += V.shift_ticks(tok) * V.TICK_SECONDS
        return tokens

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """Advance every row by one token; returns the rows that finished (and left the batch)."""
        finished = self._retire()
        if not self.rows:
            return finished
        assert self.cache is not None and self.state is not None and self.pending is not None
        self._slide_full_rows()
        logits = self._forward()
        self.pending = self._sample(logits, self.state, self.rows)
        return finished + self._retire()

    def _forward(self) -> torch.Tensor:
        """One step of the model over the batch, halving the batch until it fits in memory."""
        while True:
            try:
                need = max(self.cache.host_lengths) + 1
                if need > self.cache.capacity:
                    self.cache.reserve(max(need, 2 * self.cache.capacity))
                if self.before_model is not None:
                    self.before_model(len(self.rows), "step")
                if self._steps is not None:
                    return self._steps(self.pending, self.cache)
                return self.model.step(self.pending, self.cache)
            except torch.OutOfMemoryError:
                if len(self.rows) == 1:
                    raise
                self._park(len(self.rows) // 2)

    def _park(self, keep: int) -> None:
        """Keep the first `keep` rows in the batch; the rest wait, their cache on the host."""
        log.warning("out of memory with %d rows in the batch; going on with %d", len(self.rows), keep)
        out = list(range(keep, len(self.rows)))
        parked = Parked(
            self.rows[keep:], self.cache.take_rows(out).to("cpu"), self.state.take_rows(out), self.pending[keep:]
        )
        self.parked.append(parked)
        self._keep(list(range(keep)))
        self.limit = keep
        free_cached_memory(self.device)

    def _unpark(self) -> None:
        """Parked rows rejoin, the earliest parked first, as far as the limit allows."""
        while self.parked and (room := (self.limit or 0) - len(self.rows)) > 0:
            group = self.parked.pop(0)
            if len(group.rows) > room:
                group, rest = group.split(room)
                self.parked.insert(0, rest)
            self._join(group.rows, group.cache.to(self.device), group.state, group.pending)

    def _retire(self) -> list[Row]:
        done = [i for i, row in enumerate(self.rows) if row.done]
        finished = [self.rows[i] for i in done]
        if done:
            self._keep([i for i, row in enumerate(self.rows) if not row.done])
        self._unpark()
        if not self.rows and not self.parked:
            self.limit = None  # a batch that ran empty starts over: memory may have been short only for a while
        return finished

    def _keep(self, keep: list[int]) -> None:
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.state = self.pending = None
            return
        self.cache.select_rows(keep)
        self.state.select_rows(keep)
        self.pending = self.pending[keep]

    def _slide_full_rows(self) -> None:
        """Re-encode the window of every row whose cache is full. Out of memory, half the batch is
        parked (its cache on the host) and the rest try again; a parked full row slides when it
        rejoins."""
        while full := [b for b, n in enumerate(self.cache.host_lengths) if n >= self.max_len]:
            b = full[0]
            # The pending token is fed by the next step as usual, so the window ends before it.
            context = window(self.rows[b].tokens[:-1], self.max_len, self.rows[b].prefix)
            try:
                if self.before_model is not None:
                    self.before_model(len(self.rows), "window")
                with intra_op_threads(self.window_threads):
                    _, fresh = self.model.prefill([context], len(context))
            except torch.OutOfMemoryError:
                if len(self.rows) == 1:
                    raise
                self._park(len(self.rows) // 2)
                continue
            self.cache.replace_row(b, fresh)
            self.rows[b].windows += 1


def free_cached_memory(device: torch.device) -> None:
    """Hand the blocks an out-of-memory attempt left cached back to the GPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block on `n` torch threads (None: as set). A window's 256 tokens at once split
    across cores, where one token per row does not: re-encoding one took 18.6-20.3 ms on one
    thread of the development CPU, 12.2-12.6 ms on two, and every row of the batch waits for it."""
    # The count is the calling thread's own (OpenMP's), though torch also keeps it as the default
    # for threads that have not yet run an op: only the generation thread runs torch here.
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Generation:
    request: GenerationRequest
    tokens: list[int]  # genre token, primer, then the new tokens
    new_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0
    windows: int = 0


def tokens_done_and_expected(rows: Sequence[Row]) -> tuple[int, int]:
    """Tokens written so far and the expected total; a piece asked for in seconds is projected
    from its pace so far."""
    done = expected = 0
    for row in rows:
        n = len(row.new_tokens)
        done += n
        if row.done:
            expected += n
        elif row.request.max_new_tokens is None and row.progress > 0:
            expected += max(n, min(row.request.token_budget, round(n / row.progress)))
        else:
            expected += row.request.token_budget
    return done, expected


def seconds_written(rows: Sequence[Row]) -> float:
    """Seconds of music the rows' new tokens advance, each capped at the length it asked for."""
    return sum(
        row.seconds if row.request.max_seconds is None else min(row.seconds, row.request.max_seconds) for row in rows
    )


def decoding_threads(model: torch.nn.Module, cores: int) -> int:
    """Torch threads for the generation thread: every core for a large model; one for a small
    one, whose ops are too short to share, leaving the other cores to render tracks (and to help
    re-encode a row's window, which does share: BatchDecoder's window_threads).
    Measured on 2 cores with the shipped model (bench/step.py, bench/load.py): a step of 8 rows
    took 1.70-2.37 ms on 2 threads and 1.86-2.22 ms on one, and eight tracks at once finished
    no sooner on two."""
    small = sum(p.numel() for p in model.parameters()) < 20_000_000
    return 1 if small else cores


def generate(
    model: MusicTransformer,
    requests: Sequence[GenerationRequest],
    progress: ProgressCallback | None = None,
) -> list[Generation]:
    """Compose every request in one batch; results in request order."""
    decoder = BatchDecoder(model)
    rows = decoder.add(list(requests))
    while decoder.rows:
        decoder.step()
        if progress is not None:
            progress(*tokens_done_and_expected(rows), seconds_written(rows))
    return [Generation(row.request, row.tokens, row.new_tokens, row.seconds, row.windows) for row in rows]
