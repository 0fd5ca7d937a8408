from __future__ import annotations

import pytest
import torch

from generator import ModelConfig, MusicTransformer

pytest_plugins = ["storage_fixtures"]


def tiny_model(max_len: int = 1024, seed: int = 0, **overrides) -> MusicTransformer:
    torch.manual_seed(seed)
    config = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_ff=128, max_len=max_len, dropout=0.0, **overrides)
    return MusicTransformer(config).eval()


@pytest.fixture(scope="session")
def model() -> MusicTransformer:
    return tiny_model()
