"""Loading the published music-composer weights unchanged, our checkpoints, and bad files."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_model

from generator import CheckpointError, GeneratorError, ModelConfig, load_model, save_checkpoint
from generator import vocab as V


def published_layout(n_layers=12, d=1024, ff=2048, head_dim=64, vocab=394, max_len=2048) -> dict[str, tuple]:
    """Tensor names and shapes of the published checkpoint, written out from its description."""
    shapes = {
        "embedding.weight": (vocab, d),
        "positional_encoding.pe": (max_len, 1, d),
        "transformer.encoder.norm.weight": (d,),
        "transformer.encoder.norm.bias": (d,),
        "Wout.weight": (vocab, d),
        "Wout.bias": (vocab,),
    }
    for i in range(n_layers):
        p = f"transformer.encoder.layers.{i}."
        shapes |= {
            p + "self_attn.in_proj_weight": (3 * d, d),
            p + "self_attn.in_proj_bias": (3 * d,),
            p + "self_attn.Er": (max_len, head_dim),
            p + "self_attn.out_proj.weight": (d, d),
            p + "self_attn.out_proj.bias": (d,),
            p + "linear1.weight": (ff, d),
            p + "linear1.bias": (ff,),
            p + "linear2.weight": (d, ff),
            p + "linear2.bias": (d,),
            p + "norm1.weight": (d,),
            p + "norm1.bias": (d,),
            p + "norm2.weight": (d,),
            p + "norm2.bias": (d,),
        }
    return shapes


def random_state_dict(layout: dict[str, tuple]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=g) * 0.02 for k, shape in layout.items()}


def test_published_103m_state_dict_loads_strictly_and_unchanged(tmp_path):
    layout = published_layout()
    weights = random_state_dict(layout)
    path = tmp_path / "music-composer.pt"
    torch.save(weights, path)

    model = load_model(path).model

    assert model.config == ModelConfig(n_layers=12, d_model=1024, n_heads=16, d_ff=2048, max_len=2048)
    loaded = model.state_dict()
    assert {k: tuple(v.shape) for k, v in loaded.items()} == layout
    for k in ("embedding.weight", "transformer.encoder.layers.11.self_attn.Er", "Wout.bias"):
        assert torch.equal(loaded[k], weights[k])
    with torch.inference_mode():
        assert torch.isfinite(model(torch.tensor([[392, 60, 300]]))).all()


def test_dimensions_are_read_off_the_tensors(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(random_state_dict(published_layout(n_layers=3, d=96, ff=200, head_dim=32, max_len=300)), path)
    config = load_model(path).model.config
    assert (config.n_layers, config.d_model, config.n_heads, config.d_ff, config.max_len) == (3, 96, 3, 200, 300)


def test_our_checkpoint_round_trips_config_and_weights(tmp_path):
    model = tiny_model(max_len=128)
    save_checkpoint(model, tmp_path / "ours.pt", note="test")
    loaded = load_model(tmp_path / "ours.pt")
    again = loaded.model
    assert again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert loaded.name == "ours" and len(loaded.sha256) == 64 and loaded.genres == V.GENRES
    assert loaded.presets == {} and loaded.controls is None and again.exact_decoding is False
    # a loaded model saves as the model it wraps, keeping the genres its checkpoint named
    save_checkpoint(replace(loaded, genres=V.GENRES[::-1]), tmp_path / "again.pt")
    twice = load_model(tmp_path / "again.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twice.model.state_dict().values()))
    assert twice.genres == V.GENRES[::-1] and twice.name == "again"


def test_wrong_shapes_are_named_in_one_clear_error(tmp_path):
    weights = random_state_dict(published_layout(n_layers=2, d=64, ff=128, head_dim=16, max_len=128))
    weights["transformer.encoder.layers.1.linear2.weight"] = torch.zeros(64, 100)
    torch.save(weights, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"linear2\.weight has shape \(64, 100\), the model needs \(64, 128\)"):
        load_model(tmp_path / "bad.pt")


def test_missing_tensor_is_named(tmp_path):
    weights = random_state_dict(published_layout(n_layers=2, d=64, ff=128, head_dim=16, max_len=128))
    del weights["transformer.encoder.norm.bias"]
    torch.save(weights, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing transformer\.encoder\.norm\.bias"):
        load_model(tmp_path / "bad.pt")


def test_corrupt_and_missing_files_raise_checkpoint_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.pt")
    torch.save({"embedding.weight": torch.zeros(394, 8)}, tmp_path / "partial.pt")
    with pytest.raises(GeneratorError, match="not a Music Transformer checkpoint"):
        load_model(tmp_path / "partial.pt")


def test_a_checkpoint_carries_its_own_genre_presets(tmp_path):
    from generator import preset_sampling
    from generator.checkpoint import stored_presets

    path = tmp_path / "tuned.pt"
    save_checkpoint(tiny_model(max_len=32), path, sampling_presets={"ambient": {"temperature": 0.8}})
    model = load_model(path)
    assert model.presets["calm"].temperature == 0.8 and stored_presets(path) == model.presets
    assert preset_sampling("ambient", model.presets).temperature == 0.8  # the checkpoint's own
    assert preset_sampling("ambient", model.presets, temperature=1.2).temperature == 1.2  # the user's wins
    assert preset_sampling("jazz", model.presets).temperature == 0.95  # no own preset: the reference's
    assert preset_sampling("ambient").temperature == 0.9

    save_checkpoint(tiny_model(max_len=32), path, sampling_presets={"calm": {"temperature": 0}})
    with pytest.raises(CheckpointError, match="bad sampling presets: temperature must be more than 0"):
        load_model(path)
