"""Music generation: event tokenizer, Music Transformer, KV-cached batched sampling, rendering.

Knows nothing of chats or databases. Names are imported lazily so that torch-free parts
(`generator.vocab`, `generator.params`, `generator.render`) stay torch-free for their importers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, GeneratorError, PrimerError, SamplingError, UnknownGenreError
from .params import GenerationRequest, SamplingParams, preset_sampling

_LAZY = {
    "BatchDecoder": "decoding",
    "Generation": "decoding",
    "generate": "decoding",
    "ModelConfig": "model",
    "MusicTransformer": "model",
    "LoadedModel": "checkpoint",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
}

__all__ = [
    "CheckpointError",
    "GenerationRequest",
    "GeneratorError",
    "PrimerError",
    "SamplingError",
    "SamplingParams",
    "UnknownGenreError",
    "preset_sampling",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import LoadedModel, load_model, save_checkpoint  # noqa: F401
    from .decoding import BatchDecoder, Generation, generate  # noqa: F401
    from .model import ModelConfig, MusicTransformer  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'generator' has no attribute {name!r}")
