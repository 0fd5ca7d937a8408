"""Sampling steps: ranges, top-k, top-p with the at_least_k floor, the repetition penalty."""

from __future__ import annotations

import pytest
import torch

from generator import SamplingError, SamplingParams
from generator import vocab as V
from generator.sampling import RowState, draw, next_token_probs, restore_and_penalise


def state(*params: SamplingParams, piano_range: bool = False) -> RowState:
    return RowState.build(list(params), [piano_range] * len(params))


def sample_many(logits: torch.Tensor, st: RowState, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs, order = next_token_probs(logits, st)
    return torch.stack([draw(probs, order, torch.rand(len(logits), generator=g)) for _ in range(n)])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", 0, "temperature must be more than 0 and at most 10"),
        ("temperature", -1.0, "temperature must be more than 0"),
        ("temperature", float("nan"), "temperature must be"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
        ("top_k", -3, "top_k must be a whole number from 0 \\(off\\) to 394"),
        ("top_k", 2.5, "top_k must be a whole number"),
        ("at_least_k", -1, "at_least_k must be a whole number from 1 to 394"),
        ("rp_penalty", 2.0, "rp_penalty must be from 0 \\(off\\) to 1"),
        ("rp_restore_speed", -0.1, "rp_restore_speed must be from 0 to 100"),
        ("topp_temperature", 0.0, "topp_temperature must be more than 0"),
        ("bass", 4.5, r"bass must be from -4 to 4 \(0: the model's own register\)"),
        ("bass", float("inf"), "bass must be from -4 to 4"),
    ],
)
def test_out_of_range_values_raise_one_error_naming_the_range(field, value, message):
    with pytest.raises(SamplingError, match=message):
        SamplingParams(**{field: value})


def test_top_k_never_returns_a_token_outside_the_k_best():
    logits = torch.randn(4, V.VOCAB_SIZE, generator=torch.Generator().manual_seed(3))
    st = state(*[SamplingParams(top_k=k, top_p=1.0, temperature=3.0, rp_penalty=0) for k in (1, 5, 17, 40)])
    drawn = sample_many(logits, st, 500)
    logits[:, V.NOTE_OFF : V.VELOCITY] = float("-inf")  # no key is down, so there is none to release
    for row, k in enumerate((1, 5, 17, 40)):
        best = set(logits[row].topk(k).indices.tolist())
        seen = set(drawn[:, row].tolist())
        assert seen <= best
        assert len(seen) > min(k, 3) - 1  # and it really samples among them


def test_at_least_k_keeps_k_candidates_even_under_a_tiny_top_p():
    logits = torch.zeros(1, V.VOCAB_SIZE)
    logits[0, :10] = torch.tensor([20.0, 5, 4.9, 4.8, 4.7, 4.6, 4.5, 4.4, 4.3, 4.2])
    narrow = state(SamplingParams(top_p=0.01, at_least_k=1, top_k=0, rp_penalty=0))
    floored = state(SamplingParams(top_p=0.01, at_least_k=6, top_k=0, rp_penalty=0, temperature=10.0))
    assert (next_token_probs(logits, narrow)[0] > 0).sum() == 1
    assert (next_token_probs(logits, floored)[0] > 0).sum() >= 6
    assert set(sample_many(logits, floored, 400).flatten().tolist()) == set(range(6))


def test_at_least_k_also_widens_a_smaller_top_k():
    logits = torch.randn(1, V.VOCAB_SIZE)
    st = state(SamplingParams(top_k=2, at_least_k=5, top_p=1.0, rp_penalty=0))
    assert (next_token_probs(logits, st)[0] > 0).sum() == 5


def test_each_row_uses_its_own_temperature():
    logits = torch.linspace(300, 0, V.VOCAB_SIZE).repeat(2, 1)
    st = state(
        SamplingParams(temperature=0.01, top_k=0, top_p=1.0, rp_penalty=0),
        SamplingParams(temperature=5.0, top_k=0, top_p=1.0, rp_penalty=0),
    )
    drawn = sample_many(logits, st, 200)
    assert set(drawn[:, 0].tolist()) == {0}
    assert len(set(drawn[:, 1].tolist())) > 20


def test_whitelist_keeps_generated_pitches_in_piano_range_and_never_pad_or_genre():
    logits = torch.zeros(1, V.VOCAB_SIZE)
    logits[0, [5, 128 + 5, 100, V.PAD, V.GENRE, V.END]] = 50.0  # the model loves forbidden tokens
    st = state(SamplingParams(top_k=0, top_p=1.0, rp_penalty=0), piano_range=True)
    drawn = set(sample_many(logits, st, 300).flatten().tolist())
    lo, hi = V.PIANO_RANGE
    assert all((lo <= t <= hi) or (128 + lo <= t <= 128 + hi) or V.VELOCITY <= t < V.END for t in drawn)


def test_penalty_lowers_a_just_played_pitch_and_time_restores_it():
    params = SamplingParams(rp_penalty=0.3, rp_restore_speed=1.0, top_k=0, top_p=1.0)
    st = state(params)
    logits = torch.zeros(1, V.VOCAB_SIZE)
    before = dict(zip(*[x[0].tolist() for x in reversed(next_token_probs(logits, st))]))
    st.pitch_weight = restore_and_penalise(st.pitch_weight, torch.tensor([60]), st.rp_penalty, st.rp_restore_speed)
    after = dict(zip(*[x[0].tolist() for x in reversed(next_token_probs(logits, st))]))
    assert after[60] == pytest.approx(before[60] * 0.7, rel=1e-4)
    assert after[61] == pytest.approx(before[61], rel=1e-6)
    assert st.pitch_weight[0, 60] == pytest.approx(0.7)
    assert st.pitch_weight[0, 61] == 1.0
    # half a second of music restores half a unit at speed 1.0
    st.pitch_weight = restore_and_penalise(
        st.pitch_weight, torch.tensor([V.TIME_SHIFT + 49]), st.rp_penalty, st.rp_restore_speed
    )
    assert st.pitch_weight[0, 60] == 1.0


def test_penalty_falls_back_when_every_candidate_is_penalised_to_zero():
    logits = torch.full((1, V.VOCAB_SIZE), -10.0)
    logits[0, 60], logits[0, 62] = 10.0, 5.0  # the nucleus is just pitch 60
    st = state(SamplingParams(rp_penalty=1.0, top_k=3, top_p=0.5))
    st.pitch_weight = restore_and_penalise(st.pitch_weight, torch.tensor([60]), st.rp_penalty, st.rp_restore_speed)
    drawn = set(sample_many(logits, st, 100).flatten().tolist())
    assert 60 not in drawn and drawn  # the rest of the top-k takes over
    st.pitch_weight[:] = 0.0  # every note penalised away, and the top-k holds only notes
    st2 = state(SamplingParams(rp_penalty=1.0, top_k=2, top_p=0.5))
    st2.pitch_weight[:] = 0.0
    assert set(sample_many(logits, st2, 50).flatten().tolist()) == {60}  # nucleus without the penalty


def test_releases_go_to_keys_that_are_down_and_keep_the_models_release_probability():
    st = state(SamplingParams(top_k=0, top_p=1.0, rp_penalty=0))
    st.advance(torch.tensor([V.NOTE_ON + 60]))
    logits = torch.zeros(1, V.VOCAB_SIZE)
    probs, order = next_token_probs(logits, st)
    assert probs[0][order[0] == V.NOTE_OFF + 60] == 0  # struck this instant: no zero-length notes
    st.advance(torch.tensor([V.TIME_SHIFT + 9]))
    raw = logits.masked_fill(~st.allowed, float("-inf")).softmax(-1)[0]
    probs, order = next_token_probs(logits, st)
    p = dict(zip(order[0].tolist(), probs[0].tolist()))
    assert p[V.NOTE_OFF + 61] == 0
    assert p[V.NOTE_OFF + 60] == pytest.approx(float(raw[V.NOTE_OFF : V.NOTE_OFF + 128].sum()), rel=1e-5)
    assert p[V.NOTE_ON + 61] == pytest.approx(float(raw[V.NOTE_ON + 61]), rel=1e-5)
    # with no key down there is nothing to release
    empty = state(SamplingParams(top_k=0, top_p=1.0, rp_penalty=0))
    probs, order = next_token_probs(logits, empty)
    assert probs[0][(order[0] >= V.NOTE_OFF) & (order[0] < V.VELOCITY)].sum() == 0


def test_a_key_held_past_max_hold_is_released_next():
    st = state(SamplingParams(max_hold=1.0), SamplingParams(max_hold=0))  # the second row: off
    st.advance(torch.tensor([V.NOTE_ON + 60, V.NOTE_ON + 60]))
    st.advance(torch.tensor([V.NOTE_ON + 64, V.NOTE_ON + 64]))
    st.advance(torch.tensor([V.TIME_SHIFT + 99, V.TIME_SHIFT + 99]))  # one second later
    logits = torch.zeros(2, V.VOCAB_SIZE)
    logits[:, V.NOTE_ON + 70] = 50.0  # the model would rather strike another key
    drawn = sample_many(logits, st, 20)
    assert set(drawn[:, 0].tolist()) == {V.NOTE_OFF + 60}  # the first struck goes first
    assert set(drawn[:, 1].tolist()) == {V.NOTE_ON + 70}


def test_bass_scales_the_odds_of_the_low_keys_and_leaves_the_rest():
    """Every note-on equally likely: at temperature 1 `bass` multiplies the odds of a key at C3
    or below against one above by e**bass, before truncation (top-k 40 keeps the lifted keys);
    a row at 0 keeps them even."""
    logits = torch.zeros(3, V.VOCAB_SIZE)
    plain = dict(top_k=0, top_p=1.0, rp_penalty=0.0)
    st = state(SamplingParams(**plain), SamplingParams(bass=1.0, **plain), SamplingParams(bass=-2.0, **plain))
    probs, order = next_token_probs(logits, st)
    by_token = torch.zeros_like(probs).scatter_(-1, order, probs)
    low, high = by_token[:, V.NOTE_ON + 48], by_token[:, V.NOTE_ON + 49]
    assert torch.allclose(low / high, torch.tensor([1.0, 2.718282, 0.135335]), rtol=1e-4)
    assert by_token[1, V.NOTE_ON + 21] == low[1]  # every key below lifted alike
    cut = state(SamplingParams(top_k=40, top_p=1.0, rp_penalty=0.0, truncate="pitches", bass=0.5))
    probs, order = next_token_probs(logits[:1], cut)
    struck = order[probs > 0]
    assert set(struck[struck < V.N_PITCHES].tolist()) <= set(range(49))  # the 40 kept are lifted ones


@pytest.mark.parametrize("value", [-1, 61, float("nan")])
def test_max_hold_out_of_range_names_the_range(value):
    with pytest.raises(SamplingError, match=r"max_hold must be from 0 \(off\) to 60 seconds"):
        SamplingParams(max_hold=value)


def candidates(logits: torch.Tensor, st: RowState) -> list[set[int]]:
    probs, order = next_token_probs(logits, st)
    return [set(order[b][probs[b] > 0].tolist()) for b in range(len(logits))]


def test_truncating_only_pitches_keeps_every_time_shift_with_the_models_odds():
    # One strong pitch, then time shifts and more pitches in a long tail: truncating everything
    # keeps the strong pitch and the likeliest events; truncating pitches keeps every event that
    # is not a note-on, at the model's probability relative to each other.
    g = torch.Generator().manual_seed(0)
    logits = torch.full((2, V.VOCAB_SIZE), float("-inf"))
    logits[:, 60] = 6.0
    logits[:, V.NOTE_ON + 61 : V.NOTE_ON + 72] = torch.linspace(2.0, 0.0, 11)
    logits[:, V.TIME_SHIFT : V.END] = torch.randn(V.END - V.TIME_SHIFT, generator=g) - 1.0
    logits[:, V.VELOCITY + 20] = 1.0
    everything, pitches = (SamplingParams(top_k=3, top_p=1.0, rp_penalty=0, truncate=t) for t in ("all", "pitches"))
    probs, order = next_token_probs(logits, st := state(everything, pitches))
    kept_all, kept_pitches = candidates(logits, st)

    assert len(kept_all) <= 3
    shifts = set(range(V.TIME_SHIFT, V.END))
    assert shifts | {V.VELOCITY + 20} <= kept_pitches
    notes = {t for t in kept_pitches if t < V.NOTE_OFF}
    assert notes == {60, 61, 62}  # top_k=3 counted among the note-ons alone
    p = dict(zip(order[1].tolist(), probs[1].tolist()))
    model = logits[1].softmax(-1)
    for a, b in ((V.TIME_SHIFT, V.TIME_SHIFT + 50), (V.TIME_SHIFT + 7, V.VELOCITY + 20)):
        assert p[a] / p[b] == pytest.approx(float(model[a] / model[b]), rel=1e-4)


def test_truncating_pitches_applies_top_p_among_note_ons_and_copes_with_none_allowed():
    logits = torch.full((2, V.VOCAB_SIZE), -2.0)
    logits[:, : V.N_PITCHES] = -10.0
    logits[:, 40:44] = torch.tensor([3.0, 2.9, 2.8, -1.0])  # three likely pitches, one unlikely
    logits[1, : V.N_PITCHES] = float("-inf")  # e.g. a forced release: no note-on may come next
    st = state(*[SamplingParams(top_k=0, top_p=0.8, rp_penalty=0, truncate="pitches")] * 2)
    probs, _ = next_token_probs(logits, st)
    kept, no_notes = candidates(logits, st)
    assert {t for t in kept if t < V.N_PITCHES} == {40, 41, 42}  # 80 % of the note-on mass, not the tail
    assert not probs.isnan().any()
    assert no_notes and all(t >= V.N_PITCHES for t in no_notes)


def test_truncate_takes_only_its_two_names():
    with pytest.raises(SamplingError, match=r'truncate must be "all" or "pitches", got \'notes\''):
        SamplingParams(truncate="notes")
