"""Decoding on whatever device the model is on: the torch path against the reference, sampling
without host checks, the static cache in buckets (CUDA graphs on a GPU), and a batch that runs
out of memory halving instead of failing its rows. Tests marked gpu skip without a CUDA GPU."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

from generator import BatchDecoder, GenerationRequest, SamplingParams, generate, load_model, save_checkpoint
from generator import vocab as V
from generator.decoding import keys_down, prompt_prefix
from generator.device import Placement
from generator.graphs import BucketedSteps, StaticKVCache
from generator.sampling import RowState, draw, next_token_probs

ROOT = Path(__file__).resolve().parents[1]
on_devices = pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])


def req(genre="ambient", seed=1, tokens=80, **kw) -> GenerationRequest:
    return GenerationRequest(genre, seed=seed, max_new_tokens=tokens, **kw)


def fails_above(rows: int, seen: list[int] | None = None, kinds: tuple[str, ...] = ("prompts", "step", "window")):
    """An allocation failure for more than `rows` rows at once (in what `kinds` runs), as a GPU
    out of memory raises it; `seen` gets the row counts that went through."""

    def check(n: int, kind: str) -> None:
        if n > rows and kind in kinds:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {n} rows, {rows} fit, {kind})")
        if seen is not None:
            seen.append(n)

    return check


def reference(model, request: GenerationRequest) -> list[int]:
    """The reference's loop for one row alone: the whole sequence through the model per token."""
    device = model.embedding.weight.device
    tokens = [*prompt_prefix(model, request), *request.primer]
    state = RowState.build([request.sampling], [request.piano_range], keys_down([request.primer]), device)
    g = torch.Generator(device=device).manual_seed(request.seed)
    with torch.inference_mode():
        for _ in range(request.max_new_tokens):
            logits = model(torch.tensor([tokens], device=device))[:, -1, : V.VOCAB_SIZE]
            probs, order = next_token_probs(logits, state)
            nxt = draw(probs, order, torch.rand(1, generator=g, device=device))
            state.advance(nxt)
            tokens.append(int(nxt))
    return tokens


PRIMERS = [(), (V.VELOCITY + 20, 60, V.TIME_SHIFT + 30, 64), (V.VELOCITY + 12, 48, 52, 55, V.TIME_SHIFT + 10) * 3]
SAMPLINGS = [
    SamplingParams(),
    SamplingParams(truncate="pitches", rp_penalty=0.0),
    SamplingParams(max_hold=0.5, top_k=8, bass=1.0),
]


def test_the_torch_path_writes_what_a_full_rerun_of_each_row_alone_writes(tmp_path):
    """--device cpu --dtype fp32: no attention kernel, no bfloat16, every step in the torch ops a
    GPU runs. Rows of different lengths, batched, write token for token what the reference's
    loop writes for each alone."""
    save_checkpoint(tiny_model(max_len=256, seed=2), tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", Placement("cpu", "fp32")).model
    requests = [
        req(g, seed=10 + i, primer=p, sampling=s) for i, (g, p, s) in enumerate(zip(V.GENRES, PRIMERS, SAMPLINGS))
    ]
    decoder = BatchDecoder(model)
    assert decoder.model is model  # nothing packed, no kernel
    rows = decoder.add(requests)
    while decoder.rows:
        decoder.step()
    for row, r in zip(rows, requests):
        assert row.tokens == reference(model, r)


def test_sampling_without_host_checks_draws_exactly_what_it_draws_with_them():
    """On a GPU the sampler runs every step for every row rather than ask the device which rows
    need it; the numbers must not change. Rows here hit each step: pitch-only truncation, a
    penalty that kills every candidate (both fallbacks), keys held past max_hold, the bass lifted."""
    params = [
        SamplingParams(),
        SamplingParams(truncate="pitches"),
        SamplingParams(top_k=1, rp_penalty=1.0),  # one candidate, penalised to zero once played
        SamplingParams(max_hold=0.2, rp_penalty=0.0, bass=1.5),
    ]
    gen = torch.Generator().manual_seed(0)
    checked, lazy = (RowState.build(params, [True] * 4) for _ in range(2))
    lazy.host_checks = False
    for step in range(300):
        logits = torch.randn(4, V.VOCAB_SIZE, generator=gen) * 3
        logits[2, 60] += 30  # row 2 would play pitch 60 for ever
        uniforms = torch.rand(4, generator=gen)
        (p1, o1), (p2, o2) = next_token_probs(logits, checked), next_token_probs(logits, lazy)
        assert torch.equal(p1, p2) and torch.equal(o1, o2), f"step {step}"
        tokens = draw(p1, o1, uniforms)
        checked.advance(tokens)
        lazy.advance(tokens)
    assert torch.equal(checked.pitch_weight, lazy.pitch_weight)
    assert torch.equal(checked.struck_at.nan_to_num(-1), lazy.struck_at.nan_to_num(-1))


def test_steps_in_buckets_over_a_static_cache_write_what_the_growing_cache_writes():
    """What a GPU replays as graphs, run eagerly: rows joining and leaving, more rows than the
    cache first had slots, windows sliding; every piece as the ordinary decoder writes it."""
    model = tiny_model(max_len=64, seed=5)
    model.exact_decoding = True
    requests = [req(V.GENRES[i % 4], seed=30 + i, tokens=40 + 25 * (i % 4), primer=PRIMERS[i % 3]) for i in range(10)]
    model.cuda_graphs = True
    decoder = BatchDecoder(model)
    assert decoder._steps is not None and not decoder._steps.capture
    rows = decoder.add(requests[:3])
    for r in requests[3:]:
        for _ in range(5):
            decoder.step()
        rows += decoder.add([r])
    while decoder.rows:
        decoder.step()
    assert decoder._steps.cache.slots == 16 and decoder._steps.cache.generation == 1  # grew once, from 8
    assert max(row.windows for row in rows) >= 2
    model.cuda_graphs = False
    for row, r in zip(rows, requests):
        assert row.tokens == generate(model, [r])[0].tokens


def test_a_bucket_is_a_power_of_two_of_rows_and_of_keys_from_64():
    model = tiny_model(max_len=512)
    steps = BucketedSteps(model, StaticKVCache(model.config, 16, "cpu"), capture=False)
    assert steps.shape(1, 0) == (1, 64)
    assert steps.shape(3, 64) == (4, 128)
    assert steps.shape(9, 300) == (16, 512)
    assert steps.shape(16, 511) == (16, 512)


@on_devices
def test_a_step_out_of_memory_halves_the_batch_and_every_piece_comes_out_as_alone(device):
    model = tiny_model(max_len=128, seed=4).to(device)
    model.exact_decoding = True
    requests = [req(V.GENRES[i % 4], seed=50 + i, tokens=30 + 20 * i, primer=PRIMERS[i % 3]) for i in range(7)]
    seen: list[int] = []
    decoder = BatchDecoder(model, before_model=fails_above(3, seen))
    rows = decoder.add(requests)  # 7 prompts: encoded in parts of at most 3
    limits = set()
    while decoder.rows:
        assert decoder.room(16) == 0 or not decoder.parked
        decoder.step()
        limits.add(decoder.limit)
    assert max(seen) <= 3 and 3 in limits
    assert [len(row.new_tokens) for row in rows] == [r.max_new_tokens for r in requests]
    for row, r in zip(rows, requests):
        assert row.tokens == generate(model, [r])[0].tokens


def test_a_window_re_encoded_out_of_memory_parks_half_the_batch_and_every_piece_comes_out_as_alone():
    model = tiny_model(max_len=64, seed=5)
    model.exact_decoding = True
    requests = [req(V.GENRES[i % 4], seed=70 + i, tokens=90 + 15 * i) for i in range(4)]  # each slides
    limits: set[int | None] = set()
    decoder = BatchDecoder(model, before_model=fails_above(2, kinds=("window",)))
    rows = decoder.add(requests)
    assert len(decoder.rows) == 4  # prompts and steps of four fit; a window beside four does not
    while decoder.rows:
        decoder.step()
        limits.add(decoder.limit)
    assert 2 in limits and all(row.windows > 0 for row in rows)
    assert [len(row.new_tokens) for row in rows] == [r.max_new_tokens for r in requests]
    for row, r in zip(rows, requests):
        assert row.tokens == generate(model, [r])[0].tokens
    with pytest.raises(torch.OutOfMemoryError):  # one row whose window does not fit is an error
        decoder = BatchDecoder(model, before_model=fails_above(0, kinds=("window",)))
        decoder.add([requests[0]])
        while decoder.rows:
            decoder.step()


def test_one_row_that_does_not_fit_is_an_error_and_room_returns_once_the_batch_is_empty():
    model = tiny_model(max_len=64)
    with pytest.raises(torch.OutOfMemoryError):
        BatchDecoder(model, before_model=fails_above(0)).add([req()])
    decoder = BatchDecoder(model, before_model=fails_above(2))
    decoder.add([req(seed=s, tokens=5 + s) for s in range(4)])
    decoder.step()
    assert decoder.limit == 2 and len(decoder.rows) == 2 and len(decoder.all_rows) == 4
    assert decoder.room(16) == 0  # rows parked: nothing new joins before them
    while decoder.rows:
        decoder.step()
    assert decoder.limit is None and decoder.room(16) == 16


async def test_the_runner_finishes_every_job_when_a_batch_runs_out_of_memory(tmp_path):
    """The job runner drives the same decoder: four users' jobs in a batch that fits two at a
    time all end with a track, each piece the one composed without the failure."""
    from conftest import runner_model

    from jobs import ComposeRequest
    from jobs.inprocess import InProcessRunner, RunnerSettings
    from storage import Database, LocalArtifactStore, Track
    from storage.tracks import unpack_tokens

    async def compose_all(name: str, before_model) -> list[list[int]]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        await db.create_all()
        runner = InProcessRunner(
            db, LocalArtifactStore(tmp_path / name), runner_model, RunnerSettings(), before_model=before_model
        )
        await runner.start()
        try:
            jobs = [
                await runner.submit(ComposeRequest("telegram", f"u{i}", "jazz", tokens=40 + 10 * i, seed=i))
                for i in range(4)
            ]
            endings = await asyncio.gather(*(asyncio.wait_for(last_event(runner, j), 120) for j in jobs))
            assert [e.kind for e in endings] == ["done"] * 4, endings
            tracks = [await db.run(lambda s, e=e: s.get(Track, e.track_id)) for e in endings]
            return [unpack_tokens(t.tokens) for t in tracks]
        finally:
            await runner.stop()
            await db.dispose()

    seen: list[int] = []
    assert await compose_all("tight", fails_above(2, seen)) == await compose_all("roomy", None)
    assert max(seen) == 2


async def last_event(runner, job_id):
    events = [event async for event in runner.events(job_id)]
    return events[-1]


BENCH_ROW = re.compile(r"^\s*(\d+)\s+(naive|cached eager|cached graphs)\s+([\d.]+)(?:\s+([\d.]+)%)?\s*$", re.M)


def run_bench(*args: str) -> str:
    command = [sys.executable, str(ROOT / "bench" / "generate.py"), "--layers", "2", "--d-model", "64", "--heads", "4"]
    command += ["--ff", "128", "--tokens", "12", "--threads", "1", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def test_the_bench_sweeps_a_device_and_keeps_its_old_output():
    swept = run_bench("--device", "cpu", "--batches", "1,2", "--bandwidth", "10")
    assert "memory bandwidth: 10.0 GB/s (given by --bandwidth)" in swept
    rows = [m.groups() for m in BENCH_ROW.finditer(swept)]
    assert [(batch, path) for batch, path, _, _ in rows] == [
        ("1", "naive"),
        ("1", "cached eager"),
        ("2", "naive"),
        ("2", "cached eager"),
    ]
    assert all(float(rate) > 0 for _, _, rate, _ in rows)
    assert [share is not None for _, path, _, share in rows] == [path != "naive" for _, path, _, _ in rows]
    old = run_bench("--batch", "2")
    assert old.splitlines()[-1].startswith("naive_tokens_per_s=")


# --- on a GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_auto_picks_the_gpu_in_bfloat16_and_rows_draw_from_its_generators(tmp_path):
    save_checkpoint(tiny_model(max_len=128), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.placement.device.startswith("cuda") and loaded.placement.label == "cuda/bf16"
    weight = loaded.model.embedding.weight
    assert weight.device.type == "cuda" and weight.dtype == torch.bfloat16
    decoder = BatchDecoder(loaded.model)
    (row,) = decoder.add([req(tokens=30)])
    assert row.generator.device.type == "cuda"
    while decoder.rows:
        decoder.step()
    assert len(row.new_tokens) == 30


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_on_the_gpu_a_seed_repeats_its_piece_in_any_precision(tmp_path, dtype):
    save_checkpoint(tiny_model(max_len=64), tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", Placement("cuda", dtype)).model
    requests = [req(g, seed=i, tokens=150, primer=PRIMERS[i % 3]) for i, g in enumerate(V.GENRES)]
    first, again = generate(model, requests), generate(model, requests)
    assert [g.tokens for g in first] == [g.tokens for g in again]
    assert all(len(g.new_tokens) == 150 and g.windows >= 2 for g in first)


@pytest.mark.gpu
def test_a_captured_graph_gives_the_logits_of_the_same_bucket_run_eagerly():
    model = tiny_model(max_len=256).cuda()
    prompts = [[V.genre_token("jazz"), *PRIMERS[2]], [V.genre_token("pop")], [V.genre_token("calm"), *PRIMERS[1]]]
    with torch.inference_mode():
        runs = []
        for capture in (True, False):
            _, prefilled = model.prefill(prompts, 64)
            static = StaticKVCache(model.config, 4, "cuda")
            static.extend(prefilled)
            steps, out = BucketedSteps(model, static, capture=capture), []
            for t in range(100):
                if t == 60:
                    static.select_rows([0, 2])  # a row leaves: a smaller bucket
                tokens = torch.full((static.batch,), 256 + 40 + t % 50, device="cuda")
                out.append(steps(tokens, static).clone())
            runs.append(out)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert len(steps.graphs) == 0  # the eager run captured nothing


@pytest.mark.gpu
def test_decoding_with_cuda_graphs_composes_whole_pieces_and_repeats_a_seed(tmp_path):
    save_checkpoint(tiny_model(max_len=128), tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", Placement("cuda", "fp32", cuda_graphs=True)).model
    assert model.cuda_graphs
    requests = [req(V.GENRES[i % 4], seed=i, tokens=60 + 40 * i, primer=PRIMERS[i % 3]) for i in range(5)]

    def compose() -> list[list[int]]:
        decoder = BatchDecoder(model)
        rows = decoder.add(requests[:2])
        for r in requests[2:]:
            for _ in range(7):
                decoder.step()
            rows += decoder.add([r])
        while decoder.rows:
            decoder.step()
        assert decoder._steps is not None and decoder._steps.graphs  # replayed, not eager
        return [row.tokens for row in rows]

    first = compose()
    assert [len(t) - len(prompt_prefix(model, r)) - len(r.primer) for t, r in zip(first, requests)] == [
        r.max_new_tokens for r in requests
    ]
    assert compose() == first


@pytest.mark.gpu
def test_the_bench_sweeps_the_gpu_with_graphs():
    out = run_bench("--device", "cuda", "--batches", "1,8", "--skip-naive")
    assert "cached graphs" in out and "GB/s (measured" in out
