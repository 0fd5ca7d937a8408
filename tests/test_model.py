"""The model: exact relative attention, the cache agreeing with a full run, checkpoint loading."""

from __future__ import annotations

import torch
from conftest import tiny_model

from generator.model import skew


def test_skew_gives_each_query_its_own_relative_distances():
    model = tiny_model(max_len=64)
    attn = model.encoder.layers[0].self_attn
    q = torch.randn(2, 4, 10, 16)
    T, L = 10, attn.Er.shape[0]
    got = skew(q @ attn.Er[L - T :].T)
    for i in range(T):
        for j in range(i + 1):
            want = (q[:, :, i] * attn.Er[L - 1 - (i - j)]).sum(-1)
            assert torch.allclose(got[:, :, i, j], want, atol=1e-5)


def _cached_logits(model, sequences, prompt_lengths):
    """Prefill each row's prompt, then feed the rest of the row one token per step."""
    prompts = [s[:p] for s, p in zip(sequences, prompt_lengths)]
    steps = max(len(s) - p for s, p in zip(sequences, prompt_lengths))
    first, cache = model.prefill(prompts, capacity=max(prompt_lengths) + steps)
    out = [[first[b]] for b in range(len(sequences))]
    for t in range(steps):
        # rows that have run out are fed padding; their extra positions are never compared
        tokens = torch.tensor([s[p + t] if p + t < len(s) else 389 for s, p in zip(sequences, prompt_lengths)])
        logits = model.step(tokens, cache)
        for b in range(len(sequences)):
            out[b].append(logits[b])
    return out


def _assert_cache_matches_full_run(batch: int, prompt_lengths: list[int], total: int):
    model = tiny_model(max_len=1024)
    g = torch.Generator().manual_seed(1)
    sequences = [
        [390 + b % 4] + torch.randint(0, 388, (total - 1 - 7 * b,), generator=g).tolist() for b in range(batch)
    ]
    with torch.inference_mode():
        cached = _cached_logits(model, sequences, prompt_lengths)
        worst = 0.0
        for b, seq in enumerate(sequences):
            full = model(torch.tensor([seq]))[0]  # (T, V) logits at every position
            p = prompt_lengths[b]
            for t in range(len(seq) - p + 1):
                worst = max(worst, (cached[b][t] - full[p - 1 + t]).abs().max().item())
    assert worst <= 1e-4
    return worst


def test_cached_decoding_equals_full_forward_over_600_tokens_batch_1():
    _assert_cache_matches_full_run(batch=1, prompt_lengths=[1], total=650)


def test_cached_decoding_equals_full_forward_batch_3_with_different_lengths():
    # different prompt lengths put the rows at different positions in every step
    _assert_cache_matches_full_run(batch=3, prompt_lengths=[1, 17, 40], total=640)


def test_forward_returns_logits_for_every_position():
    model = tiny_model(max_len=64)
    logits = model(torch.randint(0, 394, (2, 30)))
    assert logits.shape == (2, 30, 394)


def test_stale_memory_in_the_cache_never_reaches_the_logits():
    """Rows of different lengths leave unwritten slots; freed NaN memory must not leak into them."""
    model = tiny_model(max_len=128)
    for _ in range(3):  # hand the allocator NaN-filled blocks of the cache's size to reuse
        junk = torch.full((2, 4, 64, 16), float("nan"))
        del junk
    with torch.inference_mode():
        logits, cache = model.prefill([[390, 60, 300, 188], [391]], capacity=64)
        for _ in range(5):
            logits = model.step(torch.tensor([62, 64]), cache)
            assert torch.isfinite(logits).all()
