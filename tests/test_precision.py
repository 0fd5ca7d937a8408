"""The decoder's precisions: int8 products close to fp32, the choice measured per batch bucket
and kept on disk per CPU and model, and a precision forced where a test or a CPU needs one."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from generator import GenerationRequest, ModelConfig, MusicTransformer, generate
from generator import precision as P
from generator import vocab as V
from generator.packed import for_decoding

INT8 = [p for p in ("int8-dynamic", "int8-weight") if P.runs(p)]
OTHERS = [p for p in P.PRECISIONS if p != "fp32" and P.runs(p)]  # what can stand in for fp32 here
CANDIDATES = ("fp32", *OTHERS)
needs_int8 = pytest.mark.skipif(not INT8, reason="torch has no int8 products on this machine")
needs_another = pytest.mark.skipif(not OTHERS, reason="fp32 is the only precision here: nothing to measure")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Tables measured here are kept in the test's own directory, not the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "melomania" / "kernels"


@pytest.fixture(autouse=True)
def one_thread():
    """Steps of a tiny model are too short to share; two threads on a busy machine only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def measured(model, precisions) -> P.Choice:
    """What a decoding copy of `model` chooses among `precisions`, timed afresh."""
    return P.prepare(copy.deepcopy(model), precisions, fresh=True)


def kl_from(reference: torch.Tensor, other: torch.Tensor) -> float:
    p, q = reference.log_softmax(-1), other.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@torch.inference_mode()
def stepped_logits(model, tokens: list[int]) -> torch.Tensor:
    """Next-token logits at every position, one token a step through the cached path."""
    logits, cache = model.prefill([tokens[:1]], len(tokens))
    out = [logits]
    for t in tokens[1:]:
        out.append(model.step(torch.tensor([t]), cache))
    return torch.cat(out)[:, : V.VOCAB_SIZE]


@pytest.mark.parametrize("precision", OTHERS)
def test_a_product_is_within_its_rounding_of_fp32(precision):
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(96, 64, generator=gen) * 0.1, torch.randn(96, generator=gen)
    x = torch.randn(5, 3, 64, generator=gen)
    exact = F.linear(x, w, b)
    got = P.make_product(precision, w, b)(x)
    assert got.dtype == torch.float32 and got.shape == (5, 3, 96)
    error = (got - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.03  # int8: 7-8 bits on each side; and not fp32 in disguise


@pytest.mark.parametrize("precision", OTHERS)
def test_decoding_stays_within_the_kl_bound_of_fp32(precision):
    """The guard on a small model: next-token distributions over a piece, against fp32's."""
    model = tiny_model(max_len=256, seed=2)
    # Sharper outputs (3.6 nats of entropy, not a random model's 5.8), as a trained model's: a
    # near-uniform distribution would hide the error (fbgemm's 8-bit activations, which
    # saturate, made KL 0.22 here; 0.0004 with 7)
    with torch.no_grad():
        model.Wout.weight *= 4
    piece = [V.genre_token("jazz"), *([V.VELOCITY + 20, 60, V.TIME_SHIFT + 30, V.NOTE_OFF + 60, 67] * 40)]
    fast = for_decoding(model, precisions=(precision,))
    assert P.uses(fast) == {precision}
    kl = kl_from(stepped_logits(model, piece), stepped_logits(fast, piece))
    assert 0 < kl < P.KL_LIMIT


@needs_int8
def test_a_forced_precision_is_used_at_every_batch_without_measuring(monkeypatch):
    monkeypatch.setattr(P, "measure", lambda *a, **k: pytest.fail("a forced precision is not measured"))
    model = tiny_model(max_len=64)
    fast = for_decoding(model, precisions=(INT8[0],))
    assert fast.decoding_choice.by_bucket == dict.fromkeys(P.BUCKETS, INT8[0])
    assert fast.decoding_choice.source == "forced"
    assert P.uses(fast) == {INT8[0]}
    assert generate(fast, [GenerationRequest("pop", max_new_tokens=30, seed=1)])[0].new_tokens
    # and the model itself is as it was
    assert not any(isinstance(m, P.RoutedLinear) for m in model.modules())
    assert fast.embedding.weight is model.embedding.weight


def test_a_model_can_carry_the_precisions_its_decoder_may_use():
    model = tiny_model(max_len=64)
    model.decoding_precisions = ("fp32",)
    fast = for_decoding(model)
    assert P.uses(fast) == {"fp32"}
    assert not any(isinstance(m, P.RoutedLinear) for m in fast.modules())


def test_without_bf16_or_int8_kernels_fp32_is_chosen_and_composes(monkeypatch):
    """A CPU where no other product runs: nothing to measure, fp32 at every batch."""
    monkeypatch.setattr(P, "_runs", {p: p == "fp32" for p in P.PRECISIONS})
    monkeypatch.setattr(P, "measure", lambda *a, **k: pytest.fail("one candidate is not measured"))
    assert P.available() == ["fp32"]
    assert P.available(("bf16", "int8-dynamic")) == ["fp32"]  # forced, but not here: fp32
    model = tiny_model(max_len=64)
    fast = for_decoding(model)
    assert P.uses(fast) == {"fp32"}
    assert not any(isinstance(m, P.RoutedLinear) for m in fast.modules())
    (piece,) = generate(model, [GenerationRequest("calm", max_new_tokens=30, seed=2)])
    assert len(piece.new_tokens) == 30


def test_an_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        P.available(("fp32", "fp8"))


def test_each_batch_runs_its_bucket_s_product():
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append((self.name, x.shape[0]))
            return x

    products = {p: Recorder(p) for p in ("fp32", "int8-dynamic", "int8-weight")}
    routed = P.RoutedLinear(torch.zeros(4, 4), None, products, None)
    routed.set_route({1: "int8-weight", 2: "fp32", 4: "fp32", 8: "int8-dynamic", 16: "fp32", 32: "int8-dynamic"})
    for rows in (1, 2, 3, 5, 8, 9, 32, 100):
        routed(torch.zeros(rows, 4))
    assert [name for name, _ in calls] == [
        "int8-weight",  # 1
        "fp32",  # 2
        "fp32",  # 3 runs as 4
        "int8-dynamic",  # 5 runs as 8
        "int8-dynamic",  # 8
        "fp32",  # 9 runs as 16
        "int8-dynamic",  # 32
        "int8-dynamic",  # past 32 (a prefill): as 32
    ]
    routed.set_route(dict.fromkeys(P.BUCKETS, "fp32"), prune=True)
    assert set(routed.products) == {"fp32"}


def test_the_choice_is_the_fastest_that_passes_the_guard_and_beats_fp32_by_the_margin():
    ms = {
        1: {"fp32": 10.0, "int8-dynamic": 5.0, "int8-weight": 4.0},
        2: {"fp32": 10.0, "int8-dynamic": 9.5},  # 5 % faster: within the noise, fp32 kept
        4: {"fp32": 10.0, "int8-dynamic": 20.0},
    }
    kl = {"int8-dynamic": 0.002, "int8-weight": 0.05}  # int8-weight fails the guard
    assert P.choose(ms, kl) == {1: "int8-dynamic", 2: "fp32", 4: "fp32"}


@pytest.fixture
def kept(private_cache, monkeypatch):
    """The cache directory, and a count of the measurements made."""
    measured = []
    real = P.measure

    def counted(model, precisions, buckets=P.BUCKETS):
        measured.append(model.config)
        return real(model, precisions, buckets)

    monkeypatch.setattr(P, "measure", counted)
    return private_cache, measured


@needs_another
def test_the_measurements_are_kept_once_and_reused(kept):
    directory, measured = kept
    model = tiny_model(max_len=64)
    rng = torch.get_rng_state()
    first = for_decoding(model, precisions=CANDIDATES)
    assert torch.equal(torch.get_rng_state(), rng)  # measuring leaves the random stream alone
    assert first.decoding_choice is None or first.decoding_choice.source == "measured"
    (table,) = directory.glob("precision-*.json")
    blob = json.loads(table.read_text())
    assert set(blob["ms"]) == {str(b) for b in P.BUCKETS}
    assert all("fp32" in times for times in blob["ms"].values())
    assert set(blob["kl"]) <= set(OTHERS)
    assert len(measured) == 1

    again = for_decoding(model, precisions=CANDIDATES)
    assert len(measured) == 1  # read, not measured
    assert list(directory.glob("precision-*.json")) == [table]
    chosen = {int(b): p for b, p in blob["by_bucket"].items()}
    assert P.uses(again) == set(chosen.values())
    if again is not model:
        assert again.decoding_choice.by_bucket == chosen


@needs_another
def test_another_cpu_or_shape_is_measured_anew(kept, monkeypatch):
    directory, measured = kept
    for_decoding(tiny_model(max_len=64), precisions=CANDIDATES)
    narrower = MusicTransformer(ModelConfig(n_layers=2, d_model=32, n_heads=2, d_ff=64, max_len=64, dropout=0.0))
    for_decoding(narrower.eval(), precisions=CANDIDATES)
    assert len(measured) == 2
    monkeypatch.setattr(P, "_cpu_model", lambda: "another CPU")
    for_decoding(tiny_model(max_len=64), precisions=CANDIDATES)
    assert len(measured) == 3
    assert len(list(directory.glob("precision-*.json"))) == 3


@needs_another
def test_a_damaged_table_is_measured_again(kept):
    directory, measured = kept
    model = tiny_model(max_len=64)
    for_decoding(model, precisions=CANDIDATES)
    (table,) = directory.glob("precision-*.json")
    table.write_text("{not json")
    for_decoding(model, precisions=CANDIDATES)
    assert len(measured) == 2
    assert json.loads(table.read_text())["by_bucket"]


@needs_another
def test_the_table_reads_as_measured():
    lines = measured(tiny_model(max_len=64), CANDIDATES).table().splitlines()
    assert lines[0].split()[:2] == ["batch", "fp32"]
    assert [int(line.split()[0]) for line in lines[1 : 1 + len(P.BUCKETS)]] == list(P.BUCKETS)
    assert lines[1 + len(P.BUCKETS)].startswith("KL from fp32")


def test_a_hopeless_precision_is_not_built_for_the_whole_model(monkeypatch):
    """Screened out by one product first: building it for every layer would cost seconds."""
    import time

    real = P.make_product

    class Sluggish(torch.nn.Module):
        def __init__(self, weight, bias):
            super().__init__()
            self.fp32 = real("fp32", weight, bias)

        def forward(self, x):
            time.sleep(0.01)
            return self.fp32(x)

    monkeypatch.setattr(P, "_runs", {p: p in ("fp32", "int8-weight") for p in P.PRECISIONS})
    monkeypatch.setattr(P, "make_product", lambda p, w, b: Sluggish(w, b) if p == "int8-weight" else real(p, w, b))
    model = tiny_model(max_len=64)
    assert P.screen(model, ["fp32", "int8-weight"]) == (["fp32"], {"int8-weight": "3x slower than fp32 in one product"})
    choice = measured(model, ("fp32", "int8-weight"))
    assert set(choice.by_bucket.values()) == {"fp32"} and list(choice.screened) == ["int8-weight"]


@pytest.mark.skipif(not P.runs("fp16"), reason="torch has no fp16 products on this machine")
def test_a_precision_beaten_in_one_product_is_timed_after_all_where_its_better_fails_the_guard(monkeypatch):
    real = P.make_product

    class FastButWrong(torch.nn.Module):
        def __init__(self, weight, bias):
            super().__init__()
            self.out_features = weight.shape[0]

        def forward(self, x):
            return x.new_zeros(*x.shape[:-1], self.out_features)

    monkeypatch.setattr(P, "_runs", {p: p in ("fp32", "fp16", "int8-dynamic") for p in P.PRECISIONS})
    wrong = lambda p, w, b: FastButWrong(w, b) if p == "int8-dynamic" else real(p, w, b)
    monkeypatch.setattr(P, "make_product", wrong)
    model = tiny_model(max_len=64)
    timed, screened = P.screen(model, ["fp32", "fp16", "int8-dynamic"])
    assert timed == ["fp32", "int8-dynamic"] and screened == {"fp16": "slower than int8-dynamic in one product"}
    choice = measured(model, ("fp32", "fp16", "int8-dynamic"))
    assert choice.kl["int8-dynamic"] > P.KL_LIMIT and "int8-dynamic" not in choice.by_bucket.values()
    assert "fp16" in choice.kl and "fp16" in choice.ms[1] and not choice.screened
