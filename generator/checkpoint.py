"""Loading and saving weights: the published raw state_dict, or our checkpoints with a config."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from . import vocab
from .controls import ControlSpec
from .device import Placement, Resolved
from .errors import CheckpointError, GeneratorError
from .model import ModelConfig, MusicTransformer
from .params import SamplingParams, presets_from

FORMAT = "melomania-checkpoint"
FORMAT_VERSION = 1
_LAYER_KEY = re.compile(r"^transformer\.encoder\.layers\.(\d+)\.")


def infer_config(state_dict: dict[str, torch.Tensor]) -> ModelConfig:
    """Read the dimensions off the tensors, as the published checkpoint carries no config."""
    try:
        vocab_size, d_model = state_dict["embedding.weight"].shape
        max_len, head_dim = state_dict["transformer.encoder.layers.0.self_attn.Er"].shape
        d_ff = state_dict["transformer.encoder.layers.0.linear1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a Music Transformer checkpoint: no tensor {exc.args[0]!r}") from None
    except ValueError:
        raise CheckpointError("not a Music Transformer checkpoint: tensors have unexpected ranks") from None
    if head_dim == 0 or d_model % head_dim:
        raise CheckpointError(f"relative table width {head_dim} does not divide the model width {d_model}")
    n_layers = 1 + max(int(m.group(1)) for k in state_dict if (m := _LAYER_KEY.match(k)))
    return ModelConfig(
        vocab_size=vocab_size,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=d_model // head_dim,
        d_ff=d_ff,
        max_len=max_len,
    )


def check_state_dict(model: MusicTransformer, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming every missing, unexpected or wrongly shaped tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    problems = [f"missing {k} {s}" for k, s in expected.items() if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in expected]
    problems += [
        f"{k} has shape {got[k]}, the model needs {s}" for k, s in expected.items() if k in got and got[k] != s
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"checkpoint does not fit the model: {shown}")


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it holds pickled objects, not tensors "
            f"(save model.state_dict(), not the model)"
        ) from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.__class__.__name__} {first}".strip()) from None


@dataclass(frozen=True)
class LoadedModel:
    """A model with what its checkpoint said about it. What decoding reads (the control
    vocabulary, exact decoding) is on the model itself; this holds what only callers need."""

    model: MusicTransformer  # in eval mode
    name: str  # the file's stem, the model a recipe names
    sha256: str  # of the checkpoint file, for recipes
    presets: dict[str, SamplingParams] = field(default_factory=dict)  # its own per genre; {}: the reference's
    genres: tuple[str, ...] = vocab.GENRES  # names in token order
    placement: Resolved = field(default_factory=Resolved)  # where it runs, in what precision (recipes name the device)

    @property
    def controls(self) -> ControlSpec | None:
        return self.model.controls


def load_model(
    path: str | os.PathLike[str],
    placement: Placement | Resolved | None = None,
    exact_decoding: bool = False,
) -> LoadedModel:
    """Load the published music-composer state_dict unchanged, or one of our checkpoints, onto
    the device and in the precision `placement` resolves to (None: auto, a GPU in bfloat16 when
    there is one, else the CPU as before). `exact_decoding`: fp32 throughout, even where
    bfloat16 would be faster (packed.py). PlacementError, before the file is read, when this
    machine cannot run what was asked."""
    resolved = placement if isinstance(placement, Resolved) else (placement or Placement()).resolve(exact_decoding)
    path = Path(path)
    blob = _read(path)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        if not isinstance(blob.get("model"), dict) or not isinstance(blob.get("config"), dict):
            raise CheckpointError(f"{path} is a damaged melomania checkpoint (no model or config)")
        state_dict = blob["model"]
        known = {f.name for f in fields(ModelConfig)}
        config = ModelConfig(**{k: v for k, v in blob["config"].items() if k in known})
        genres = tuple(blob.get("genres", vocab.GENRES))
        presets = _presets(path, blob)
        controls = _controls(path, blob)
    elif isinstance(blob, dict) and all(isinstance(k, str) for k in blob):
        state_dict = blob
        config = infer_config(state_dict)
        genres = vocab.GENRES
        presets = {}
        controls = None
    else:
        raise CheckpointError(f"{path} holds no state_dict")
    if controls is None and (steered := [g for g, p in presets.items() if p.controls.any]):
        raise CheckpointError(
            f"{path} has presets with attribute controls ({', '.join(steered)}) but no control vocabulary"
        )
    if controls is not None and controls.first != vocab.VOCAB_SIZE:
        raise CheckpointError(
            f"{path}'s control tokens must follow the {vocab.VOCAB_SIZE} events, not start at {controls.first}"
        )
    expected = vocab.VOCAB_SIZE + (controls.size if controls else 0)
    if config.vocab_size != expected:
        with_controls = f" and {controls.size} control tokens" if controls else ""
        raise CheckpointError(
            f"checkpoint vocabulary has {config.vocab_size} tokens, the events{with_controls} need {expected}"
        )
    model = MusicTransformer(config)
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    model.controls = controls
    model.exact_decoding = resolved.exact or exact_decoding
    model.cuda_graphs = resolved.cuda_graphs
    model = model.to(device=resolved.device, dtype=resolved.torch_dtype).eval()
    return LoadedModel(model, path.stem, _sha256(path), presets, genres, resolved)


def _presets(path: Path, blob: dict) -> dict[str, SamplingParams]:
    try:
        return presets_from(blob.get("meta", {}).get("sampling_presets"))
    except (GeneratorError, TypeError) as exc:
        raise CheckpointError(f"{path} carries bad sampling presets: {exc}") from None


def _controls(path: Path, blob: dict) -> ControlSpec | None:
    raw = blob.get("controls")
    if not raw:
        return None
    try:
        return ControlSpec.from_dict(raw)
    except GeneratorError as exc:
        raise CheckpointError(f"{path} carries a bad control vocabulary: {exc}") from None


def stored_presets(path: str | os.PathLike[str]) -> dict[str, SamplingParams]:
    """The sampling presets a checkpoint carries ({} for the published state_dict), without
    building the model."""
    path = Path(path)
    blob = _read(path)
    if not (isinstance(blob, dict) and blob.get("format") == FORMAT):
        return {}
    return _presets(path, blob)


def save_checkpoint(model: MusicTransformer | LoadedModel, path: str | os.PathLike[str], **meta: Any) -> None:
    """Write weights with their config and control vocabulary, atomically (a crash never leaves
    half a file). A loaded model keeps the genres its checkpoint had; presets go in `meta`
    (sampling_presets), as export does."""
    path = Path(path)
    genres = model.genres if isinstance(model, LoadedModel) else vocab.GENRES
    model = model.model if isinstance(model, LoadedModel) else model
    blob = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": asdict(model.config),
        "genres": list(genres),
        "controls": model.controls.as_dict() if model.controls else None,
        "model": model.state_dict(),
        "meta": meta,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
