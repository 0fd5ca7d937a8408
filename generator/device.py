"""Where the model runs and in what precision: MELOMANIA_DEVICE and MELOMANIA_DTYPE (--device and
--dtype), read once where a process starts and handed down as one `Placement`.

`Placement` only checks spelling and imports no torch (the settings, and so the bots, build one);
`resolve()` asks this machine and turns it into `Resolved`, or raises PlacementError naming what
is available. What "auto" picks:

- a CUDA GPU when there is one, in bfloat16 where it multiplies bfloat16 natively (else fp32:
  fp16 has a narrow range, and a checkpoint is not known to stay within it);
- otherwise the CPU with its own choices (packed.for_decoding): fp32 weights, bfloat16 products
  where the CPU has them natively, a bfloat16 cache where the attention kernel is built.

On the CPU, fp32 means fp32 throughout (what MELOMANIA_EXACT_DECODING asks), and bf16 insists on
the packed bfloat16 products, so it is refused where they would be emulated. fp16 is for GPUs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import GeneratorError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "fp32", "bf16", "fp16")
DEVICE_SPELLING = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICES_TEXT = "auto, cpu, cuda or cuda:N"


class PlacementError(GeneratorError):
    """A device or precision that is misspelt, or that this machine does not have."""


@dataclass(frozen=True)
class Placement:
    """What was asked for; `resolve()` turns it into what this machine will do."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16
    cuda_graphs: bool = False  # MELOMANIA_CUDA_GRAPHS: replay decode steps as CUDA graphs (CUDA only)

    def __post_init__(self) -> None:
        device, dtype = str(self.device).strip().lower(), str(self.dtype).strip().lower()
        if not DEVICE_SPELLING.fullmatch(device):
            raise PlacementError(f"device must be {DEVICES_TEXT}, got {self.device!r}")
        if dtype not in DTYPES:
            raise PlacementError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "dtype", dtype)

    def resolve(self, exact: bool = False) -> Resolved:
        """What this machine does with it. `exact` (MELOMANIA_EXACT_DECODING): fp32 throughout,
        which an explicit bf16 or fp16 contradicts."""
        device = resolve_device(self.device)
        if exact and self.dtype not in ("auto", "fp32"):
            raise PlacementError(f"exact decoding is fp32 throughout; it cannot run in {self.dtype}")
        if device.startswith("cuda"):
            return Resolved(device, _cuda_dtype(device, "fp32" if exact else self.dtype), False, self.cuda_graphs)
        _check_cpu_dtype(self.dtype)
        return Resolved("cpu", "fp32", exact or self.dtype == "fp32", False)


@dataclass(frozen=True)
class Resolved:
    """A placement this machine can run. `dtype` is the weights' (and the cache's, on a GPU);
    `exact`: no bfloat16 anywhere on the CPU (packed.for_decoding leaves the model as it is)."""

    device: str = "cpu"  # cpu | cuda:N
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    exact: bool = False
    cuda_graphs: bool = False

    @property
    def label(self) -> str:
        """How a recipe names it: 'cpu', or the GPU's precision too ('cuda/bf16'), since the
        same seed may write a different piece in another precision."""
        return "cpu" if self.device == "cpu" else f"cuda/{self.dtype}"

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]


def resolve_device(name: str) -> str:
    """'auto': the first GPU when there is one, else the CPU. A GPU asked for and absent is an
    error naming the devices there are."""
    import torch

    name = Placement(device=name).device
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return f"cuda:{torch.cuda.current_device()}" if gpus else "cpu"
    if name == "cpu":
        return "cpu"
    index = int(name.partition(":")[2] or 0)
    if not gpus:
        why = " (torch here is built without CUDA)" if torch.version.cuda is None else ""
        raise PlacementError(f"device {name} asked for, but this machine has no CUDA GPU{why}; available: cpu")
    if index >= gpus:
        there = ", ".join(f"cuda:{i}" for i in range(gpus))
        raise PlacementError(f"device {name} asked for, but this machine has {gpus} GPU(s); available: cpu, {there}")
    return f"cuda:{index}"


def available_dtypes(device: str) -> tuple[str, ...]:
    """The precisions `resolve` accepts on `device` ('cpu' or 'cuda:N'), besides auto."""
    if device == "cpu":
        from .packed import supported

        return ("fp32", "bf16") if supported() else ("fp32",)
    return ("fp32", "bf16", "fp16") if _cuda_bf16(device) else ("fp32", "fp16")


def _cuda_bf16(device: str) -> bool:
    import torch

    with torch.cuda.device(device):
        try:  # emulated bfloat16 (before Ampere) runs slower than fp32: not counted
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch without the argument
            return torch.cuda.is_bf16_supported()


def _cuda_dtype(device: str, dtype: str) -> str:
    if dtype == "auto":
        return "bf16" if _cuda_bf16(device) else "fp32"
    if dtype not in available_dtypes(device):
        import torch

        name = torch.cuda.get_device_name(device)
        raise PlacementError(
            f"{device} ({name}) has no native {dtype}; available: {', '.join(available_dtypes(device))} or auto"
        )
    return dtype


def _check_cpu_dtype(dtype: str) -> None:
    if dtype in ("auto", "fp32"):
        return
    have = ", ".join(available_dtypes("cpu"))
    if dtype == "fp16":
        raise PlacementError(f"fp16 runs on a CUDA GPU only; on the CPU use {have} or auto")
    if dtype not in available_dtypes("cpu"):
        raise PlacementError(
            f"this CPU has no native bfloat16 products (AVX512-BF16 or AMX) and would emulate them, slower "
            f"than fp32; on it use {have} or auto"
        )
