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
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from . import vocab as V
from .params import SamplingParams


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

    @classmethod
    def build(cls, params: list[SamplingParams], piano_range: list[bool]) -> RowState:
        def col(name: str, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor([getattr(p, name) for p in params], dtype=dtype)

        top_k = col("top_k", torch.long)
        top_k = torch.where(top_k == 0, V.VOCAB_SIZE, top_k)
        at_least_k = col("at_least_k", torch.long)
        return cls(
            temperature=col("temperature"),
            top_k=torch.maximum(top_k, at_least_k),
            top_p=col("top_p"),
            topp_temperature=col("topp_temperature"),
            at_least_k=at_least_k,
            rp_penalty=col("rp_penalty"),
            rp_restore_speed=col("rp_restore_speed"),
            allowed=torch.stack([allowed_tokens(p) for p in piano_range]),
            pitch_weight=torch.ones(len(params), V.N_PITCHES),
        )

    def select_rows(self, rows: torch.Tensor) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name).index_select(0, rows))

    def extend(self, other: RowState) -> None:
        for f in fields(self):
            setattr(self, f.name, torch.cat([getattr(self, f.name), getattr(other, f.name)]))


# --- the steps, each a pure function of sorted logits and per-row values -----------------------


def top_k_mask(sorted_logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """True for ranks below each row's k."""
    ranks = torch.arange(sorted_logits.shape[-1], device=sorted_logits.device)
    return ranks[None, :] < k[:, None]


def top_p_mask(sorted_logits: torch.Tensor, p: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """True for the smallest best-first set whose probability, at `temperature`, reaches p."""
    probs = (sorted_logits / temperature[:, None]).softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    return mass_before < p[:, None]


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
    shift = V.is_time_shift_tensor(tokens)
    seconds = torch.where(shift, (tokens - V.TIME_SHIFT + 1) * V.TICK_SECONDS, 0.0)
    weight = pitch_weight + (seconds * restore_speed)[:, None]
    on = tokens < V.N_PITCHES
    rows = on.nonzero().squeeze(-1)
    weight[rows, tokens[rows]] -= penalty[rows]
    return weight.clamp_(0.0, 1.0)


def next_token_probs(logits: torch.Tensor, state: RowState) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) logits → (probs over sorted candidates (B, V), token id of each sorted slot (B, V))."""
    logits = logits.float().masked_fill(~state.allowed, float("-inf"))
    sorted_logits, order = logits.sort(-1, descending=True)
    in_top_k = top_k_mask(sorted_logits, state.top_k)
    floor = at_least_k_mask(sorted_logits, state.at_least_k)
    nucleus = in_top_k & (top_p_mask(sorted_logits, state.top_p, state.topp_temperature) | floor)
    probs = tempered_probs(sorted_logits, nucleus, state.temperature)

    use_rp = state.rp_penalty > 0
    if bool(use_rp.any()):
        penalised = torch.where(use_rp[:, None], penalise(probs, order, state.pitch_weight), probs)
        # Fallbacks, in order, for rows whose every candidate was penalised to zero: the rest of
        # the top-k (still penalised), then the nucleus without the penalty.
        dead = penalised.sum(-1) == 0
        if bool(dead.any()):
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
