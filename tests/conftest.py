from __future__ import annotations

import os
import subprocess

import pytest
import torch

from generator import LoadedModel, ModelConfig, MusicTransformer
from generator import vocab as V

pytest_plugins = ["storage_fixtures"]

NOTES = [V.VELOCITY + 20, 60, V.TIME_SHIFT + 49, V.NOTE_OFF + 60, 64, V.TIME_SHIFT + 49, V.NOTE_OFF + 64]
PIECE = (V.genre_token("calm"), *NOTES * 20)  # a stored piece's tokens, as written: 40 notes, 10 s


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu skip, saying why, on a machine without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_model(max_len: int = 1024, seed: int = 0, **overrides) -> MusicTransformer:
    torch.manual_seed(seed)
    config = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_ff=128, max_len=max_len, dropout=0.0, **overrides)
    model = MusicTransformer(config).eval()
    # One precision at every batch, not whichever a busy machine timed fastest: a seed composes
    # the same piece alone or batched, run after run (test_precision.py tests the choosing).
    model.decoding_precisions = ("fp32",)
    return model


def runner_model() -> LoadedModel:
    """A tiny model named as a loaded checkpoint is, for the job runner's recipes (its loader)."""
    return LoadedModel(tiny_model(max_len=256), name="tiny", sha256="0" * 64)


@pytest.fixture(scope="session", autouse=True)
def installed_kernel():
    """The attention kernel as `make setup` leaves it: built before anything decodes (decoding
    itself never builds it)."""
    from generator.attention_kernel import load

    return load(build_if_missing=True)


@pytest.fixture(scope="session")
def model() -> MusicTransformer:
    return tiny_model()


def one_line_error(result, *fragments: str) -> str:
    """A CLI result that failed the way every user error should: exit 2, one `error:` line on
    stderr holding each fragment, no traceback. Returns the line."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk. Needs root (as CI and make test run)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)
