"""Where the model runs (MELOMANIA_DEVICE, MELOMANIA_DTYPE, --device, --dtype): spelling checked
once, the machine asked once, and what it lacks refused in one line naming what it has."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import one_line_error, tiny_model
from typer.testing import CliRunner

from generator import SamplingParams, load_model, save_checkpoint
from generator.device import Placement, PlacementError, Resolved, available_dtypes
from generator.packed import supported
from generator.track import Recipe, RecipeError
from melomania.cli import app

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU says")


def test_spelling_is_checked_without_the_machine_and_normalised():
    assert Placement(" CUDA:1 ", "BF16") == Placement("cuda:1", "bf16")
    for device in ("gpu", "cuda:", "cuda:x", "tpu", ""):
        with pytest.raises(PlacementError, match="device must be auto, cpu, cuda or cuda:N"):
            Placement(device)
    with pytest.raises(PlacementError, match="dtype must be one of auto, fp32, bf16, fp16, got 'int8'"):
        Placement(dtype="int8")


def test_placement_and_settings_import_no_torch():
    """The bots build the settings, and so a Placement; they never import torch."""
    code = (
        "import sys; from melomania.settings import Settings; "
        "Settings().placement('cpu', 'fp32'); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@no_gpu
def test_auto_on_a_machine_without_a_gpu_is_the_cpu_with_its_own_choices():
    assert Placement().resolve() == Resolved("cpu", "fp32", exact=False)
    assert Placement(cuda_graphs=True).resolve().cuda_graphs is False  # graphs are for a GPU
    assert Placement(dtype="fp32").resolve() == Resolved("cpu", "fp32", exact=True)  # fp32 throughout
    assert Placement().resolve(exact=True).exact  # MELOMANIA_EXACT_DECODING
    assert Placement().resolve().label == "cpu"


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_a_gpu_asked_for_where_there_is_none_names_what_there_is(device):
    with pytest.raises(
        PlacementError, match=rf"device {device} asked for, but this machine has no CUDA GPU.*available: cpu"
    ):
        Placement(device).resolve()


def test_a_precision_the_cpu_cannot_run_names_those_it_can():
    have = ", ".join(available_dtypes("cpu"))
    with pytest.raises(PlacementError, match=f"fp16 runs on a CUDA GPU only; on the CPU use {have} or auto"):
        Placement("cpu", "fp16").resolve()
    if supported():
        assert Placement("cpu", "bf16").resolve() == Resolved("cpu", "fp32", exact=False)
    else:
        with pytest.raises(PlacementError, match=r"no native bfloat16 products.*use fp32 or auto"):
            Placement("cpu", "bf16").resolve()
    with pytest.raises(PlacementError, match="exact decoding is fp32 throughout"):
        Placement("cpu", "bf16").resolve(exact=True)


def test_load_model_puts_the_model_where_the_placement_says(tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(tiny_model(max_len=64), path)
    exact = load_model(path, Placement("cpu", "fp32"))
    assert exact.placement == Resolved("cpu", "fp32", exact=True) and exact.model.exact_decoding
    plain = load_model(path, Placement("cpu"))
    assert not plain.model.exact_decoding and plain.model.embedding.weight.device.type == "cpu"
    with pytest.raises(PlacementError, match="fp16"):
        load_model(path, Placement("cpu", "fp16"))


def test_a_recipe_names_a_gpu_and_reads_as_before_on_the_cpu():
    on_cpu = Recipe("m", "ab" * 32, "jazz", 1, SamplingParams(), 30.0)
    assert "device" not in on_cpu.summary() and Recipe.parse(on_cpu.summary()).device == "cpu"
    on_gpu = Recipe("m", "ab" * 32, "jazz", 1, SamplingParams(), 30.0, device="cuda/bf16")
    assert "device=cuda/bf16" in on_gpu.summary()
    assert Recipe.parse(on_gpu.summary()).device == "cuda/bf16"
    with pytest.raises(RecipeError, match="recipe device must be cpu or cuda/"):
        Recipe.parse(on_cpu.summary() + " device=tpu")


# --- the command line --------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def env(monkeypatch, tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(tiny_model(max_len=64), path)
    monkeypatch.setenv("MELOMANIA_CHECKPOINT", str(path))
    for name in ("MELOMANIA_DEVICE", "MELOMANIA_DTYPE", "MELOMANIA_SOUNDFONT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@no_gpu
@pytest.mark.parametrize("command", [["compose", "jazz"], ["worker"]])
def test_a_gpu_asked_for_on_the_command_line_where_there_is_none_is_one_line(env, command):
    one_line_error(runner.invoke(app, [*command, "--device", "cuda"]), "no CUDA GPU", "available: cpu")


@no_gpu
def test_a_bot_process_composing_in_process_loads_where_it_is_told(env, tmp_path, capsys):
    """`run telegram|discord|all --device …` (their tokens are checked with the chat first)."""
    import typer

    from melomania.cli import prepare_bot_process

    env.setenv("MELOMANIA_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    env.delenv("MELOMANIA_REDIS_URL", raising=False)
    with pytest.raises(typer.Exit) as exit_:
        prepare_bot_process("cuda")
    assert exit_.value.exit_code == 2 and "no CUDA GPU" in capsys.readouterr().err
    _, composer = prepare_bot_process("cpu", "fp32")
    assert composer.loaded.placement == Resolved("cpu", "fp32", exact=True)


def test_a_misspelt_device_in_the_environment_is_one_line(env):
    env.setenv("MELOMANIA_DEVICE", "gpu")
    one_line_error(runner.invoke(app, ["compose", "jazz"]), "MELOMANIA_DEVICE is invalid", "auto, cpu, cuda")


def test_a_precision_the_cpu_lacks_is_one_line_naming_those_it_has(env):
    if torch.cuda.is_available():
        pytest.skip("auto picks the GPU here")
    one_line_error(runner.invoke(app, ["compose", "jazz", "--dtype", "fp16"]), "fp16 runs on a CUDA GPU only")
    env.setenv("MELOMANIA_DTYPE", "fp16")
    one_line_error(runner.invoke(app, ["worker"]), "fp16 runs on a CUDA GPU only")


def test_train_reads_the_device_from_the_environment_and_checks_its_spelling(env):
    env.setenv("MELOMANIA_DEVICE", "cpu")
    one_line_error(runner.invoke(app, ["train", "--device", "tpu"]), "device must be auto, cpu, cuda or cuda:N")
    # without --device the environment's (valid) one stands: the run gets as far as the data
    one_line_error(runner.invoke(app, ["train", "--out", "run"]), "no dataset")


def test_a_recipe_records_bass_only_when_it_is_asked_for():
    plain = Recipe("m", "ab" * 32, "jazz", 1, SamplingParams(), 30.0)
    assert "bass" not in plain.summary() and Recipe.parse(plain.summary()).sampling.bass == 0.0
    lifted = Recipe("m", "ab" * 32, "jazz", 1, SamplingParams(bass=0.75), 30.0)
    assert "bass=0.75" in lifted.summary()
    assert Recipe.parse(lifted.summary()).sampling == lifted.sampling
    with pytest.raises(RecipeError, match="recipe bass='low' is not a number"):
        Recipe.parse(plain.summary() + " bass=low")
