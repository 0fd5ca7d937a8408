"""The decode-step attention kernel over a bfloat16 cache (generator/attention.c), built here with
the machine's compiler as the decoder builds it, against plain torch."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pytest
import torch
from conftest import tiny_model

from generator import BatchDecoder, GenerationRequest, ModelConfig, MusicTransformer, generate
from generator.attention_kernel import build, load, reference
from generator.packed import for_decoding, supported


@pytest.fixture(scope="module")
def kernel():
    built = load(build_if_missing=True)
    assert built is not None, "the test command installs a C compiler; the kernel must build"
    return built


def inputs(batch: int, heads: int, capacity: int, dim: int, valid: list[int], seed: int = 0, max_len: int = 512):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, dim, generator=gen)
    k_cache, v_cache = (torch.randn(batch, heads, capacity, dim, generator=gen).bfloat16() for _ in range(2))
    er = torch.randn(max_len, dim, generator=gen)
    return q, k_cache, v_cache, er, torch.tensor(valid)


@pytest.mark.parametrize(
    ("batch", "heads", "capacity", "dim", "valid"),
    [
        (1, 4, 64, 64, [2]),  # the first step after a one-token prompt
        (3, 4, 300, 64, [300, 17, 256]),  # a row at the cache's full capacity, rows far apart
        (2, 2, 40, 80, [33, 40]),  # a head size past one block of 64
        (8, 1, 20, 16, [20] * 8),
    ],
)
def test_the_kernel_matches_plain_torch(kernel, batch, heads, capacity, dim, valid):
    args = inputs(batch, heads, capacity, dim, valid)
    out = kernel(*args)
    assert out.shape == (batch, heads, dim) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(*args), atol=1e-5, rtol=1e-4)


def test_large_logits_still_give_the_softmax_of_plain_torch(kernel):
    q, k_cache, v_cache, er, valid = inputs(2, 4, 200, 64, [200, 150])
    args = (q * 8, k_cache, v_cache, er * 8, valid)  # logits in the hundreds: most weights underflow
    torch.testing.assert_close(kernel(*args), reference(*args), atol=1e-4, rtol=1e-4)


def test_a_row_never_reads_past_its_own_positions(kernel):
    q, k_cache, v_cache, er, valid = inputs(2, 4, 64, 64, [10, 50])
    before = kernel(q, k_cache, v_cache, er, valid)
    k_cache[0, :, 10:], v_cache[0, :, 10:] = float("nan"), float("nan")  # stale memory past row 0's end
    after = kernel(q, k_cache, v_cache, er, valid)
    assert torch.equal(before, after)


def test_a_row_comes_out_the_same_bit_for_bit_whatever_rows_share_the_batch(kernel):
    q, k_cache, v_cache, er, valid = inputs(3, 4, 128, 64, [90, 128, 7])
    together = kernel(q, k_cache, v_cache, er, valid)
    for b in range(3):  # each row alone, in a cache of its own capacity
        alone = kernel(q[b : b + 1], k_cache[b : b + 1].clone(), v_cache[b : b + 1].clone(), er, valid[b : b + 1])
        assert torch.equal(together[b], alone[0])


def test_the_kernel_reads_relative_positions_as_the_model_s_eager_step_does(kernel):
    """The model's own step both ways, rows of different lengths: its eager attention over an
    fp32 cache, and the kernel over a bfloat16 one holding the same values."""
    from generator.model import StepPlan

    model = tiny_model(max_len=64)
    attn = model.encoder.layers[0].self_attn
    project = attn._qkv

    def bfloat16_qkv(x):  # new keys and values a bfloat16 cache stores exactly, as the fp32 one does
        return tuple(t.bfloat16().float() for t in project(x))

    attn._qkv = bfloat16_qkv
    lengths = torch.tensor([4, 36, 63, 17])  # 63: the step fills the context to its last position
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 64, generator=gen)
    k_cache, v_cache = (torch.randn(4, 4, 64, 16, generator=gen).bfloat16() for _ in range(2))
    with torch.inference_mode():
        eager = attn.step(x, k_cache.float(), v_cache.float(), StepPlan.for_lengths(lengths, 4))
        attn.attend = kernel
        fused = attn.step(x, k_cache, v_cache, StepPlan.for_lengths(lengths, 4, kernel=True))
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_refused_with_the_reason(kernel):
    q, k_cache, v_cache, er, valid = inputs(1, 2, 16, 16, [16])
    with pytest.raises(ValueError, match="contiguous bfloat16"):
        kernel(q, k_cache.float(), v_cache, er, valid)
    with pytest.raises(ValueError, match="multiple of 16"):
        kernel(q[..., :8], k_cache[..., :8].contiguous(), v_cache[..., :8].contiguous(), er[:, :8], valid)
    with pytest.raises(ValueError, match="one length per row"):
        kernel(q, k_cache, v_cache, er, torch.tensor([16, 16]))
    with pytest.raises(ValueError, match="shapes do not agree"):
        kernel(q, k_cache, v_cache[:, :1].contiguous(), er, valid)
    with pytest.raises(ValueError, match="shapes do not agree"):
        kernel(q, k_cache, v_cache, er[:, :8], valid)
    # A length out of range is kept to the row: below zero nothing is read, past the end the end.
    assert torch.equal(kernel(q, k_cache, v_cache, er, torch.tensor([-5])), torch.zeros(1, 2, 16))
    assert torch.equal(kernel(q, k_cache, v_cache, er, torch.tensor([99])), kernel(q, k_cache, v_cache, er, valid))


@pytest.mark.skipif(not supported(), reason="no bfloat16 products here; MKL's fp32 products vary with the rows")
def test_pieces_joining_a_batch_one_by_one_compose_what_they_would_alone_bit_for_bit(kernel):
    """With the kernel every row's attention is its own, and oneDNN's bfloat16 products are too,
    so a piece does not depend on what shares its batch: rows joining one step apart, sliding
    their windows."""
    model = tiny_model(max_len=64)
    model.decoding_precisions = ("bf16",)  # at every batch, whatever was timed fastest
    requests = [
        GenerationRequest(g, max_new_tokens=150 + 20 * i, seed=40 + i)
        for i, g in enumerate(["jazz", "pop", "calm", "classic"])
    ]
    alone = [generate(model, [r])[0].tokens for r in requests]
    decoder = BatchDecoder(model)
    rows = []
    for r in requests:
        rows += decoder.add([r])
        decoder.step()
    while decoder.rows:
        decoder.step()
    assert all(row.windows >= 2 for row in rows)
    assert [row.tokens for row in rows] == alone


def test_the_decoding_copy_stores_a_bfloat16_cache_and_composes_close_to_fp32(kernel):
    model = tiny_model(max_len=128)
    fast = for_decoding(model)
    assert fast.kv_dtype == torch.bfloat16
    assert fast.new_cache(1, 8).k[0].dtype == torch.bfloat16
    fp32_cache = for_decoding(model, kernel=False)
    assert fp32_cache.kv_dtype is None
    # The same cached steps either way: logits apart by bfloat16 rounding of keys and values only.
    prompts = [[390, 256 + 20, 60, 300], [391, 300]]
    with torch.inference_mode():
        (a, cache_a), (b, cache_b) = (m.prefill(prompts, 64) for m in (fast, fp32_cache))
        for token in (60 + 128, 310, 64):
            tokens = torch.tensor([token, token])
            a, b = fast.step(tokens, cache_a), fp32_cache.step(tokens, cache_b)
            torch.testing.assert_close(a, b, atol=0.05, rtol=0.0)
    assert generate(fast, [GenerationRequest("jazz", max_new_tokens=40, seed=3)])[0].new_tokens


def test_a_head_size_the_kernel_cannot_read_keeps_the_fp32_cache():
    model = MusicTransformer(ModelConfig(n_layers=1, d_model=32, n_heads=4, d_ff=64, max_len=64)).eval()  # head size 8
    assert for_decoding(model).kv_dtype is None


@pytest.mark.parametrize(
    ("compiler", "install", "says"),
    [
        ("{tmp}/no-such-cc", True, "the attention kernel is unavailable"),  # no compiler at all
        ("cc -fno-such-flag", True, "the attention kernel did not build"),  # one that fails to compile
        ("cc", False, "the attention kernel is not built for this machine"),  # installed without it
    ],
)
def test_without_a_working_compiler_decoding_keeps_fp32_and_says_why_once(tmp_path, compiler, install, says):
    """A fresh process, as a machine without a working compiler would start (the install tried
    to build the kernel), or one installed without building it: no kernel, one warning in the
    log with the reason, and a piece composed all the same. Decoding itself never builds."""
    script = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        f"from generator.attention_kernel import load; load(build_if_missing={install})\n"
        "from conftest import tiny_model\n"
        "from generator import GenerationRequest, generate\n"
        "from generator.packed import for_decoding\n"
        "fast = for_decoding(tiny_model(max_len=64))\n"
        "assert fast.kv_dtype is None, fast.kv_dtype\n"
        "print(len(generate(fast, [GenerationRequest('pop', max_new_tokens=20, seed=1)])[0].new_tokens))\n"
    )
    env = {**os.environ, "CC": compiler.format(tmp=tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    tests_dir = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tests_dir, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "20"
    assert done.stderr.count(says) == 1, done.stderr
    if "fno-such-flag" in compiler:
        assert "no-such-flag" in done.stderr  # the compiler's own complaint, for whoever reads the log
    assert not list(tmp_path.rglob("*.so"))


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temp dir, under tmp_path: where a kernel goes when no private cache can be kept."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_a_kernel_directory_others_could_write_to_is_never_used(tmp_path, monkeypatch, scratch):
    shared = tmp_path / "cache" / "melomania" / "kernels"
    shared.mkdir(parents=True)
    shared.chmod(0o777)  # anyone could plant a library there, and we would load it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = build()
    assert built.is_file() and not list(shared.iterdir())
    assert built.parent.parent == scratch and built.parent.stat().st_mode & 0o077 == 0


def test_a_kernel_directory_that_is_a_link_elsewhere_is_judged_where_it_leads(tmp_path, monkeypatch, scratch):
    elsewhere = tmp_path / "shared"
    elsewhere.mkdir(mode=0o777)
    elsewhere.chmod(0o777)  # someone else's world-writable directory, say
    (tmp_path / "cache" / "melomania").mkdir(parents=True)
    (tmp_path / "cache" / "melomania" / "kernels").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = build()
    assert not list(elsewhere.iterdir())
    assert built.parent.parent == scratch


def test_a_private_cache_keeps_the_kernel_for_the_next_process(tmp_path, monkeypatch, scratch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = build()
    assert first.parent == (tmp_path / "cache" / "melomania" / "kernels").resolve()
    assert first.stat().st_mode & 0o022 == 0
    assert build() == first and first.stat().st_mtime_ns == build().stat().st_mtime_ns  # found, not rebuilt
    assert build(compiler="cc -O2") != first  # the compiler's arguments are part of what was built
    assert not list(scratch.iterdir())


def test_kernels_unused_for_a_month_are_removed_when_another_is_built(tmp_path, monkeypatch, scratch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = build()
    kept = first.parent
    month_ago = time.time() - 31 * 86400
    old, recent = kept / "attention-0000000000000000.so", kept / "attention-1111111111111111.so"
    for path, when in ((old, month_ago), (recent, time.time() - 86400)):
        path.write_bytes(b"a kernel another version built")
        os.utime(path, (when, when))
    os.utime(first, (month_ago, month_ago))
    assert build() == first and first.stat().st_atime > month_ago + 86400  # finding it marks it used
    assert old.exists()  # nothing is removed while nothing new is built
    other = build(compiler="cc -O2")
    assert sorted(kept.glob("attention-*.so")) == sorted([first, recent, other])
