"""Sampling controls as small composable steps over a batch, each row with its own values.

The pipeline follows the reference: a whitelist, top-k, top-p measured at its own temperature,
an at_least_k floor, the temperature, then the dynamic repetition penalty on note-on
probabilities with two fallbacks. Every step works on logits sorted best-first, so one sort per
step serves all of them and "the k best" means exactly ranks 0 … k-1.

Where we differ from the reference, on purpose:
- top-p keeps the smallest set whose mass reaches p (the token that crosses p is in), the usual
  nucleus definition; the reference drops that token, which with a peaked distribution can leave
  only the at_least_k floor.
- at_least_k also widens a smaller top_k: "never sample from fewer than k tokens" wins.
- the first fallback (the rest of the top-k when the penalty zeroes the nucleus) is penalised too,
  so it cannot hand back the very notes the penalty just removed.
- a time shift restores the penalty by its real length, (k+1)·10 ms; padding, end and genre
  tokens restore nothing.
- releases go to keys that are down. A small model loses track of which keys it holds (ours put
  a third of its note-off probability on keys that were up, measured on validation windows);
  the decoder ignores such a release, the key stays down, and the piece thickens into a drone
  (polyphony 11–14 where the data has 3–7). The probability of releasing *something* stays the
  model's; only the choice of key is limited to the keys down. With it, polyphony matches the data.
- a key held longer than `max_hold` seconds is released: the next token is its note-off, so a
  stale key never sits in the context longer than anything in the training data did.
- `truncate="pitches"` lets top-k and top-p choose among note-ons only; every release, velocity
  and time shift stays a candidate with the model's own probability. Cutting the tail of the
  time shifts drops the long ones, so truncating everything wrote our small model's pieces at
  1.5–2.4x the data's notes per second; cutting only pitches keeps its rhythm (bench/quality.py).
- `bass` is added to the logits of the lowest keys' note-ons (C3 and below). A small model drifts
  up the keyboard, and in jazz the missing bass line is what makes its pieces sound like classic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch

from . import vocab as V
from .params import SamplingParams

BASS_TOP = 48  # C3: the keys the `bass` value lifts or lowers are this one and those below it


def allowed_tokens(piano_range: bool = True) -> torch.Tensor:
    """(V,) bool: what a generated piece may contain. Never pad, end or genre tokens: the piece
    runs to the length asked for. With piano_range, notes stay within the piano's keys."""
    ok = torch.zeros(V.VOCAB_SIZE, dtype=torch.bool)
    lo, hi = V.PIANO_RANGE if piano_range else (0, 127)
    ok[V.NOTE_ON + lo : V.NOTE_ON + hi + 1] = True
    ok[V.NOTE_OFF + lo : V.NOTE_OFF + hi + 1] = True
    ok[V.VELOCITY : V.END] = True
    return ok


@dataclass
class RowState:
    """Per-row sampling values and penalty weights for a batch, as tensors of B rows."""

    temperature: torch.Tensor  # (B,)
    top_k: torch.Tensor  # (B,) long, already floored by at_least_k; V when off
    top_p: torch.Tensor  # (B,)
    topp_temperature: torch.Tensor  # (B,)
    at_least_k: torch.Tensor  # (B,) long
    rp_penalty: torch.Tensor  # (B,)
    rp_restore_speed: torch.Tensor  # (B,)
    allowed: torch.Tensor  # (B, V) bool
    pitch_weight: torch.Tensor  # (B, 128) in [0, 1]: the repetition penalty's memory
    max_hold: torch.Tensor  # (B,) seconds; inf when off
    clock: torch.Tensor  # (B,) seconds of music written
    struck_at: torch.Tensor  # (B, 128) clock when each key went down; nan while it is up
    pitches_only: torch.Tensor  # (B,) bool: top-k and top-p cut only note-ons
    bass: torch.Tensor  # (B,) added to the logits of the note-ons at BASS_TOP and below
    # Skip the steps no row needs this time, which takes reading a flag back from the device:
    # free on the CPU, a stall of the whole queue on a GPU, where the steps run for every row
    # instead (the same numbers: a row a step does not concern comes out of it unchanged).
    host_checks: bool = field(default=True, compare=False)

    @classmethod
    def build(
        cls,
        params: list[SamplingParams],
        piano_range: list[bool],
        keys_down: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> RowState:
        """`keys_down`: (B, 128) bool, keys a row's primer leaves down; they count as struck now.
        The state lives on `device`, the model's."""

        def col(name: str, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor([getattr(p, name) for p in params], dtype=dtype)

        top_k = col("top_k", torch.long)
        top_k = torch.where(top_k == 0, V.VOCAB_SIZE, top_k)
        at_least_k = col("at_least_k", torch.long)
        max_hold = col("max_hold")
        if keys_down is None:
            keys_down = torch.zeros(len(params), V.N_PITCHES, dtype=torch.bool)
        on_host = cls(
            temperature=col("temperature"),
            top_k=torch.maximum(top_k, at_least_k),
            top_p=col("top_p"),
            topp_temperature=col("topp_temperature"),
            at_least_k=at_least_k,
            rp_penalty=col("rp_penalty"),
            rp_restore_speed=col("rp_restore_speed"),
            allowed=torch.stack([allowed_tokens(p) for p in piano_range]),
            pitch_weight=torch.ones(len(params), V.N_PITCHES),
            max_hold=torch.where(max_hold > 0, max_hold, torch.inf),
            clock=torch.zeros(len(params)),
            struck_at=torch.where(keys_down.cpu(), 0.0, torch.nan),
            pitches_only=torch.tensor([p.truncate == "pitches" for p in params], dtype=torch.bool),
            bass=col("bass"),
        )
        return on_host.to(torch.device(device))

    def _tensors(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "host_checks"]

    def to(self, device: torch.device) -> RowState:
        """The same state on `device`; host checks only where that is the CPU."""
        moved = {name: getattr(self, name).to(device) for name in self._tensors()}
        return RowState(**moved, host_checks=device.type == "cpu")

    def advance(self, tokens: torch.Tensor) -> None:
        """Account for the tokens (B,) just drawn: the penalty's memory, the clock, the keys down."""
        self.pitch_weight = restore_and_penalise(self.pitch_weight, tokens, self.rp_penalty, self.rp_restore_speed)
        self.clock = self.clock + shift_seconds(tokens)
        self.struck_at = press_and_release(self.struck_at, tokens, self.clock)

    def select_rows(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (batch indices), in that order."""
        kept = self.take_rows(rows)
        for name in self._tensors():
            setattr(self, name, getattr(kept, name))

    def take_rows(self, rows: Sequence[int]) -> RowState:
        """A new state of `rows` (batch indices), in that order; ours is left as it is."""
        index = torch.tensor(rows, dtype=torch.long, device=self.clock.device)
        taken = {name: getattr(self, name).index_select(0, index) for name in self._tensors()}
        return RowState(**taken, host_checks=self.host_checks)

    def extend(self, other: RowState) -> None:
        for name in self._tensors():
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    def unused(self, mask: torch.Tensor) -> bool:
        """True when no row of `mask` is set and the host may look (host_checks): a step it
        gates can be skipped. False says nothing on a GPU: the step then runs for every row."""
        return self.host_checks and not bool(mask.any())


# --- the steps, each a pure function of sorted logits and per-row values -----------------------


def shift_seconds(tokens: torch.Tensor) -> torch.Tensor:
    shift = V.is_time_shift_tensor(tokens)
    return torch.where(shift, (tokens - V.TIME_SHIFT + 1) * V.TICK_SECONDS, 0.0)


def press_and_release(struck_at: torch.Tensor, tokens: torch.Tensor, clock: torch.Tensor) -> torch.Tensor:
    """Strike times after each row's token. A key struck again while down keeps its first strike
    time, as the decoder hears it."""
    out = struck_at.clone()
    rows = torch.arange(len(tokens), device=tokens.device)
    on = tokens < V.N_PITCHES
    off = (tokens >= V.NOTE_OFF) & (tokens < V.NOTE_OFF + V.N_PITCHES)
    # Every row writes its one slot, most of them the value already there: selecting the rows
    # that strike or release would need their count on the host.
    pitch = tokens.clamp(0, V.N_PITCHES - 1)
    was = out[rows, pitch]
    out[rows, pitch] = torch.where(on & was.isnan(), clock, was)
    released = (tokens - V.NOTE_OFF).clamp(0, V.N_PITCHES - 1)
    out[rows, released] = torch.where(off, torch.nan, out[rows, released])
    return out


def lift_bass(logits: torch.Tensor, state: RowState) -> torch.Tensor:
    """Each row's `bass` added to the logits of the note-ons at BASS_TOP and below (0 changes
    nothing), before any truncation, so top-k and top-p see the register asked for. At
    temperature T the odds of a low key against a high one change by e**(bass / T)."""
    if state.unused(state.bass != 0):
        return logits
    out = logits.clone()
    out[:, V.NOTE_ON : V.NOTE_ON + BASS_TOP + 1] += state.bass[:, None]
    return out


def release_overdue(logits: torch.Tensor, state: RowState) -> torch.Tensor:
    """Rows holding a key longer than their max_hold get that key's note-off (the longest-held
    first) as their only candidate."""
    held_for = (state.clock[:, None] - state.struck_at).nan_to_num(-1.0)
    overdue = held_for >= state.max_hold[:, None]
    forced = overdue.any(-1)
    if state.unused(forced):
        return logits
    key = held_for.masked_fill(~overdue, -1.0).argmax(-1)
    only = torch.full_like(logits, float("-inf"))
    only.scatter_(-1, (V.NOTE_OFF + key)[:, None], 0.0)
    return torch.where(forced[:, None], only, logits)


def release_only_keys_down(logits: torch.Tensor, state: RowState) -> torch.Tensor:
    """Note-offs only for keys that are down, with the probability the model gave to releasing
    keys that are up moved onto them in proportion, so its wish to release something stands.
    A key struck at this very instant is not down yet: the data has no zero-length notes."""
    down = state.struck_at < state.clock[:, None]  # False for nan: keys that are up
    offs = logits[:, V.NOTE_OFF : V.NOTE_OFF + V.N_PITCHES]
    log_off = offs.logsumexp(-1, keepdim=True)
    log_down = offs.masked_fill(~down, float("-inf")).logsumexp(-1, keepdim=True)
    boost = (log_off - log_down).nan_to_num(0.0, posinf=0.0)  # log(all releases / releases of keys down)
    out = logits.clone()
    out[:, V.NOTE_OFF : V.NOTE_OFF + V.N_PITCHES] = torch.where(down, offs + boost, float("-inf"))
    return out


def top_k_mask(sorted_logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """True for ranks below each row's k."""
    ranks = torch.arange(sorted_logits.shape[-1], device=sorted_logits.device)
    return ranks[None, :] < k[:, None]


def top_p_mask(sorted_logits: torch.Tensor, p: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """True for the smallest best-first set whose probability, at `temperature`, reaches p."""
    probs = (sorted_logits / temperature[:, None]).softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    return mass_before < p[:, None]


def pitch_truncation(
    sorted_logits: torch.Tensor, order: torch.Tensor, k: torch.Tensor, p: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k and top-p masks counted among the note-ons alone (their k best, the smallest set of
    them holding p of their mass); every other event is always in."""
    is_on = order < V.N_PITCHES
    in_k = ~is_on | (is_on.cumsum(-1) <= k[:, None])
    on_logits = sorted_logits.masked_fill(~is_on, float("-inf"))
    probs = (on_logits / temperature[:, None]).softmax(-1).nan_to_num(0.0)  # no note-on allowed: NaN → 0
    in_p = ~is_on | ((probs.cumsum(-1) - probs) < p[:, None])
    return in_k, in_p


def at_least_k_mask(sorted_logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return top_k_mask(sorted_logits, k)


def tempered_probs(sorted_logits: torch.Tensor, keep: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    logits = (sorted_logits / temperature[:, None]).masked_fill(~keep, float("-inf"))
    return logits.softmax(-1).nan_to_num_(0.0)  # a row with nothing kept comes out all zero


def penalise(probs: torch.Tensor, order: torch.Tensor, pitch_weight: torch.Tensor) -> torch.Tensor:
    """Scale note-on probabilities by how recently that pitch was played."""
    is_on = order < V.N_PITCHES
    weight = pitch_weight.gather(-1, order.clamp(max=V.N_PITCHES - 1))
    return probs * torch.where(is_on, weight, torch.ones_like(weight))


def restore_and_penalise(
    pitch_weight: torch.Tensor, tokens: torch.Tensor, penalty: torch.Tensor, restore_speed: torch.Tensor
) -> torch.Tensor:
    """After `tokens` (B,): a time shift restores every pitch at restore_speed per second of music;
    a note-on lowers its own pitch by penalty. Weights stay in [0, 1]."""
    weight = pitch_weight + (shift_seconds(tokens) * restore_speed)[:, None]
    on = tokens < V.N_PITCHES
    # every row writes (a row without a note-on takes 0 off some pitch, which changes nothing):
    # picking out the rows with one would need their count on the host
    rows = torch.arange(len(tokens), device=tokens.device)
    weight[rows, tokens.clamp(max=V.N_PITCHES - 1)] -= torch.where(on, penalty, 0.0)
    return weight.clamp_(0.0, 1.0)


def next_token_probs(logits: torch.Tensor, state: RowState) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) logits → (probs over sorted candidates (B, V), token id of each sorted slot (B, V))."""
    logits = logits.float().masked_fill(~state.allowed, float("-inf"))
    logits = release_overdue(release_only_keys_down(lift_bass(logits, state), state), state)
    sorted_logits, order = logits.sort(-1, descending=True)
    in_top_k = top_k_mask(sorted_logits, state.top_k)
    in_top_p = top_p_mask(sorted_logits, state.top_p, state.topp_temperature)
    if not state.unused(state.pitches_only):
        k, p = pitch_truncation(sorted_logits, order, state.top_k, state.top_p, state.topp_temperature)
        in_top_k = torch.where(state.pitches_only[:, None], k, in_top_k)
        in_top_p = torch.where(state.pitches_only[:, None], p, in_top_p)
    floor = at_least_k_mask(sorted_logits, state.at_least_k)
    nucleus = in_top_k & (in_top_p | floor)
    probs = tempered_probs(sorted_logits, nucleus, state.temperature)

    use_rp = state.rp_penalty > 0
    if not state.unused(use_rp):
        penalised = torch.where(use_rp[:, None], penalise(probs, order, state.pitch_weight), probs)
        # Fallbacks, in order, for rows whose every candidate was penalised to zero: the rest of
        # the top-k (still penalised), then the nucleus without the penalty.
        dead = penalised.sum(-1) == 0
        if not state.unused(dead):
            wider = penalise(
                tempered_probs(sorted_logits, in_top_k & ~nucleus, state.temperature), order, state.pitch_weight
            )
            penalised = torch.where(dead[:, None], wider, penalised)
            dead = penalised.sum(-1) == 0
            penalised = torch.where(dead[:, None], probs, penalised)
        probs = penalised
    return probs, order


def draw(probs: torch.Tensor, order: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling with one uniform per row, so each row's randomness is its own."""
    cdf = probs.cumsum(-1)
    target = uniforms[:, None] * cdf[:, -1:]
    slot = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    # searchsorted can land on a zero-probability slot only through rounding at the very top
    slot = torch.minimum(slot, (probs > 0).cumsum(-1).argmax(-1, keepdim=True))
    return order.gather(-1, slot).squeeze(-1)
