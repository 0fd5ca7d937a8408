"""Music generation: event tokenizer, Music Transformer, KV-cached batched sampling.

Knows nothing of chats or databases.
"""

from .checkpoint import load_model, save_checkpoint
from .decoding import BatchDecoder, Generation, GenerationRequest, generate
from .errors import CheckpointError, GeneratorError, PrimerError, SamplingError, UnknownGenreError
from .model import ModelConfig, MusicTransformer
from .sampling import SamplingParams

__all__ = [
    "BatchDecoder",
    "CheckpointError",
    "Generation",
    "GenerationRequest",
    "GeneratorError",
    "ModelConfig",
    "MusicTransformer",
    "PrimerError",
    "SamplingError",
    "SamplingParams",
    "UnknownGenreError",
    "generate",
    "load_model",
    "save_checkpoint",
]
