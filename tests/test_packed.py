"""The decoder's bfloat16 projections: close to fp32, independent of the other rows, and leaving
the model itself untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from generator import vocab as V
from generator.attention_kernel import load
from generator.packed import PackedLinear, for_decoding, supported
from generator.precision import RoutedLinear

needs_bf16 = pytest.mark.skipif(not supported(), reason="oneDNN runs no bfloat16 products on this CPU")


@needs_bf16
def test_a_packed_product_matches_fp32_to_bfloat16_rounding():
    torch.manual_seed(0)
    w, b, x = torch.randn(96, 64) * 0.1, torch.randn(96), torch.randn(5, 3, 64)
    exact = F.linear(x.double(), w.double(), b.double())
    got = PackedLinear(w, b)(x)
    assert got.dtype == torch.float32 and got.shape == (5, 3, 96)
    assert (got.double() - exact).abs().max() < 0.05  # bfloat16 keeps 8 bits: ~0.4 % per element
    assert (got.double() - exact).abs().max() > 0  # and it is not fp32 in disguise


@needs_bf16
def test_a_row_comes_out_the_same_bit_for_bit_whatever_rows_share_the_batch():
    torch.manual_seed(1)
    lin = PackedLinear(torch.randn(256, 64), torch.randn(256))
    x = torch.randn(100, 64)
    alone = torch.cat([lin(x[i : i + 1]) for i in range(100)])
    for n in (2, 3, 8, 16, 33, 100):  # past 32 rows the batch is padded to a power of two
        assert torch.equal(lin(x[:n]), alone[:n])


def test_the_decoding_copy_leaves_the_model_as_it_was():
    model = tiny_model(max_len=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = for_decoding(model, precisions=("bf16",) if supported() else ("fp32",))
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, RoutedLinear) for m in model.modules())
    if not supported() and load() is None:
        assert fast is model
        return
    assert fast is not model
    # in_proj, out_proj, linear1 and linear2 in each of the 2 layers, then Wout (where packed)
    packed = [p for m in fast.modules() if isinstance(m, RoutedLinear) for p in m.products.values()]
    assert sum(isinstance(p, PackedLinear) for p in packed) == (2 * 4 + 1 if supported() else 0)
    tokens = torch.tensor([[V.genre_token("jazz"), 60, 300, 64, 200]])
    with torch.inference_mode():
        want, got = model(tokens), fast(tokens)
    assert (want - got).abs().max() < 0.05
    assert torch.equal(want.argmax(-1), got.argmax(-1))


def test_a_model_in_half_precision_is_decoded_as_it_is():
    model = tiny_model(max_len=64).half()
    assert for_decoding(model) is model


def test_a_model_marked_for_exact_decoding_keeps_fp32():
    model = tiny_model(max_len=64)
    model.exact_decoding = True  # what MELOMANIA_EXACT_DECODING sets on the loaded model
    assert for_decoding(model) is model


@needs_bf16
def test_no_rows_give_no_rows():
    lin = PackedLinear(torch.randn(8, 4), torch.randn(8))
    assert lin(torch.zeros(0, 3, 4)).shape == (0, 3, 8)


def test_the_decoding_copy_shares_the_model_s_tensors():
    model = tiny_model(max_len=64)
    fast = for_decoding(model)
    assert fast.embedding.weight is model.embedding.weight  # no second fp32 copy of the weights
