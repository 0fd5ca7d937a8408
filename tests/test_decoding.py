"""Batched generation: seeds, lengths, continuous batching, the sliding window, primers, progress."""

from __future__ import annotations

import pytest
from conftest import tiny_model

from generator import BatchDecoder, GenerationRequest, GeneratorError, SamplingParams, UnknownGenreError, generate
from generator import vocab as V
from generator.tokenizer import decode_notes, duration_seconds


def req(genre="ambient", seed=1, **kw) -> GenerationRequest:
    kw.setdefault("max_new_tokens", 120)
    return GenerationRequest(genre, seed=seed, **kw)


def test_same_seed_same_piece_and_different_seed_different_piece(model):
    a, b = generate(model, [req(seed=7)]), generate(model, [req(seed=7)])
    c = generate(model, [req(seed=8)])
    assert a[0].tokens == b[0].tokens
    assert a[0].tokens != c[0].tokens


def test_a_seed_reproduces_a_piece_whatever_shares_the_batch(model):
    alone = generate(model, [req(seed=5, sampling=SamplingParams(temperature=1.2))])[0].tokens
    batched = generate(
        model,
        [
            req("jazz", seed=1),
            req(seed=5, sampling=SamplingParams(temperature=1.2)),
            req("pop", seed=9, max_new_tokens=40),
        ],
    )
    assert batched[1].tokens == alone


def test_pieces_start_with_the_genre_token_and_have_the_asked_length(model):
    out = generate(model, [req("classical", max_new_tokens=50), req("pop", max_new_tokens=80)])
    assert [g.tokens[0] for g in out] == [390, 393]
    assert [len(g.new_tokens) for g in out] == [50, 80]
    assert all(0 <= t < V.END for g in out for t in g.new_tokens)


def test_length_in_seconds_stops_once_that_much_music_is_written(model):
    (g,) = generate(model, [GenerationRequest("jazz", max_seconds=12.0, seed=3)])
    assert 12.0 <= duration_seconds(g.new_tokens) < 13.0
    assert g.seconds == pytest.approx(duration_seconds(g.new_tokens))


def test_rows_joining_a_running_batch_compose_what_they_would_alone(model):
    late = req("pop", seed=11, max_new_tokens=90, primer=(256 + 20, 60, 300, 188))
    decoder = BatchDecoder(model)
    early = decoder.add([req(seed=4, max_new_tokens=150)])
    for _ in range(30):
        decoder.step()
    joined = decoder.add([late])
    finished = []
    while decoder.rows:
        finished += decoder.step()
    assert set(finished) == {early[0], joined[0]}
    assert joined[0].tokens == generate(model, [late])[0].tokens
    assert early[0].tokens == generate(model, [req(seed=4, max_new_tokens=150)])[0].tokens


def test_pieces_longer_than_the_context_slide_the_window():
    small = tiny_model(max_len=64)
    (g,) = generate(small, [req(max_new_tokens=300)])
    assert len(g.new_tokens) == 300
    assert g.windows >= 4


def test_primed_generation_continues_the_primer(model):
    primer = (256 + 20, 60, 320, 188, 256 + 18, 64, 320, 192)
    (g,) = generate(model, [req("jazz", primer=primer, max_new_tokens=30)])
    assert g.tokens[: 1 + len(primer)] == [391, *primer]
    assert len(g.new_tokens) == 30


def test_progress_reports_tokens_done_up_to_the_total(model):
    seen = []
    generate(model, [req(max_new_tokens=40), req(max_new_tokens=25)], progress=lambda d, t, _s: seen.append((d, t)))
    assert seen[-1] == (65, 65)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_bad_requests_raise_generator_errors():
    with pytest.raises(UnknownGenreError, match="unknown genre 'metal'"):
        GenerationRequest("metal", max_new_tokens=10)
    with pytest.raises(GeneratorError, match="max_new_tokens or max_seconds"):
        GenerationRequest("jazz")
    with pytest.raises(GeneratorError, match="max_seconds must be more than 0"):
        GenerationRequest("jazz", max_seconds=-5)
    with pytest.raises(GeneratorError, match="seed must be a whole number"):
        GenerationRequest("jazz", max_new_tokens=5, seed=-1)
    with pytest.raises(GeneratorError, match="primer tokens must be events"):
        GenerationRequest("jazz", max_new_tokens=5, primer=(392,))


def test_sliding_window_with_the_cache_equals_recomputing_each_window():
    """The cached path, sliding past the context, writes exactly what a full re-run of each
    window (genre token + most recent half) would."""
    import torch

    from generator.decoding import window
    from generator.packed import for_decoding
    from generator.sampling import RowState, draw, next_token_probs

    small = tiny_model(max_len=48)
    small.exact_decoding = True  # fp32 on both paths: this is about the window, not the kernels
    rerun = for_decoding(small)
    request = req(max_new_tokens=160, seed=3)
    (cached,) = generate(small, [request])

    tokens = [V.genre_token(request.genre)]
    context = list(tokens)
    state = RowState.build([request.sampling], [True])
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for _ in range(160):
            if len(context) > small.config.max_len:  # the window is cut from the whole history
                context = [*window(tokens[:-1], small.config.max_len), tokens[-1]]
            probs, order = next_token_probs(rerun(torch.tensor([context]))[:, -1], state)
            nxt = draw(probs, order, torch.rand(1, generator=g))
            state.advance(nxt)
            tokens.append(int(nxt))
            context.append(int(nxt))
    assert cached.windows >= 3
    assert cached.tokens == tokens


def test_a_slid_window_restates_the_notes_still_held():
    from generator.decoding import held_notes, window

    history = [392, 256 + 20, 60, 256 + 10, 64, 300, 128 + 60, *([300] * 100)]  # 64 stays down
    assert held_notes(history[1:]) == [(64, 10)]
    context = window(history, 64)
    assert context[:3] == [392, 256 + 10, 64] and len(context) == 64 // 2


def test_pieces_release_only_keys_down_and_hold_none_past_max_hold():
    """Random weights release keys that are up and hold keys for ever; the sampler allows
    neither, from the keys the primer leaves down on, across slid windows."""
    primer = (256 + 20, 60, 256 + 18, 64, 320)  # 60 and 64 are down when composing starts
    small = tiny_model(max_len=64)
    params = SamplingParams(max_hold=2.0)
    pieces = generate(small, [req(primer=primer, sampling=params, max_new_tokens=400, seed=s) for s in range(3)])
    for g in pieces:
        assert g.windows >= 4
        down: dict[int, int] = {}
        now = 0
        for t in g.tokens[1:]:
            if V.is_note_on(t):
                down.setdefault(t - V.NOTE_ON, now)
            elif V.is_note_off(t):
                assert t - V.NOTE_OFF in down, "released a key that is up"
                del down[t - V.NOTE_OFF]
            elif V.is_time_shift(t):
                now += V.shift_ticks(t)
                # a key may go overdue within one shift; it is released before the next one
            assert all(now - since <= 200 + 100 for since in down.values())
        assert len(decode_notes(g.new_tokens)) > 10


def test_bass_moves_a_piece_down_the_keyboard():
    """The same seed three times in one batch: lifted, as the model has it, and lowered."""
    rows = [req("jazz", seed=4, max_new_tokens=400, sampling=SamplingParams(bass=b)) for b in (3.0, 0.0, -3.0)]
    low = [sum(n.pitch <= 48 for n in decode_notes(g.new_tokens)) for g in generate(tiny_model(), rows)]
    assert low[0] > low[1] > low[2]


def test_with_exact_decoding_long_pieces_joining_one_by_one_compose_what_they_would_alone():
    """MELOMANIA_EXACT_DECODING: fp32 products, and here (as in every check so far) a seed's piece
    is the same whatever rows of other lengths share its batch, through several slides."""
    model = tiny_model(max_len=64, seed=3)
    model.exact_decoding = True
    requests = [req(g, seed=20 + i, max_new_tokens=300) for i, g in enumerate(V.GENRES)]
    decoder = BatchDecoder(model)
    rows = []
    for r in requests:  # each joins a batch whose other rows are longer
        rows += decoder.add([r])
        for _ in range(7):
            decoder.step()
    while decoder.rows:
        decoder.step()
    assert decoder.model is model  # no bfloat16 copy
    assert min(row.windows for row in rows) >= 4
    for row, r in zip(rows, requests):
        assert row.tokens == generate(model, [r])[0].tokens


def test_windows_are_re_encoded_on_the_threads_asked_for_and_decoding_goes_on_with_its_own():
    import torch

    decoder = BatchDecoder(tiny_model(max_len=64), window_threads=2)
    prefill, threads_seen = decoder.model.prefill, []

    def watched(*args, **kwargs):  # the model's own prefill, noting the threads it ran on
        threads_seen.append(torch.get_num_threads())
        return prefill(*args, **kwargs)

    decoder.model.prefill = watched
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (row,) = decoder.add([req(max_new_tokens=300)])
        while decoder.rows:
            decoder.step()
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert row.windows >= 4 and len(row.new_tokens) == 300
    assert threads_seen == [1] + [2] * row.windows  # the prompt on the decoding's one, windows on two


def test_progress_reports_the_seconds_of_music_written(model):
    seen = []
    (g,) = generate(model, [req(seed=3, max_new_tokens=None, max_seconds=2.0)], lambda *a: seen.append(a))
    seconds = [s for _, _, s in seen]
    assert seconds == sorted(seconds) and seconds[-1] == min(g.seconds, 2.0)
    assert seen[-1][0] == len(g.new_tokens)
