"""A decode step's attention over a bfloat16 key/value cache, in a small C kernel (attention.c)
built at install with the machine's compiler (`make setup`, `melomania build-kernel`, the Docker
build; never on a user's request) and called through ctypes.

Why: at a batch of eight the cache no longer fits the CPU's caches, and reading it is what a
step costs beyond one user's step. With fp32 keys, MKL's batched matrix-vector products read at
7–15 GB/s on the development machine; ATen has no faster kernel for bfloat16 keys with fp32
queries (its bfloat16 bmm and SDPA were slower), and TorchInductor's fused loop, tried too, reads
them no faster than MKL once they come from memory. The kernel reads half the bytes, in order,
prefetching ahead. In the running decoder, batch 8 at about 300 positions, per layer of the
shipped model (4 heads of 64): 126 µs for the whole attention, against about 200 µs for the fp32
cache's two batched products alone. (Its first version, products only, timed alone: 65 µs
against 440 µs eager over 4 layers' caches, 130 against 510 µs with the caches coming from
memory, 12 against 55 µs for one row.)

The kernel does a row's whole attention: logits against keys and the relative-position table,
softmax, weighted sum; keys and values are rounded to bfloat16 when stored, and the arithmetic
is fp32. Validation NLL through the cached decode path (16 windows of 500 events per genre) moved
by at most 0.0002 nats against the fp32 cache. Every sum runs over a row's own positions in a
fixed order, so a row's result is the same, bit for bit, whatever else is in the batch.

Where it was not built (no C compiler, a failed build, another CPU), `load()` returns None,
decoding keeps the fp32 cache and eager attention, and the log says why once. `CC` picks the
compiler (default `cc`); built kernels are kept in $XDG_CACHE_HOME/melomania/kernels (else
~/.cache/…), one per source, compiler and CPU, when no one else could write there, and one unused
for 30 days is removed when another is built; otherwise the kernel is built for this process
alone in a private scratch directory, removed once it is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Freestanding, with no stack protector: the library needs nothing linked, and -z defs fails the
# build (falling back to the fp32 cache) rather than leave a call for the loader to resolve.
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-ffreestanding", "-nostdlib", "-fno-stack-protector"]
FLAGS += ["-Wl,-z,defs"]
SCRATCH_PREFIX = "melomania-kernel-"  # a private directory for one process, when no cache can be kept
# A kept kernel unused this long is removed when another is built: every upgrade, compiler or CPU
# (a shared home) builds one of its own, and the old ones would otherwise pile up for good.
UNUSED_DAYS = 30


class AttentionKernel:
    """The built kernel; call it as `attend(q, k_cache, v_cache, er, valid)`."""

    def __init__(self, library: ctypes.CDLL):
        self._lib = library  # keeps the library loaded as long as the function is in use
        p, n = ctypes.c_void_p, ctypes.c_int64
        self._step = library.attention_step
        self._step.argtypes = [p] * 7 + [n] * 6
        self._step.restype = None

    def __call__(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, er: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """q (B, H, D) fp32, already scaled; caches (B, H, capacity, D) bfloat16; er (max_len, D)
        fp32, the layer's relative-position table (last row: distance 0); valid (B,) int64, the
        positions each row attends to (its length, the new token included) → (B, H, D) fp32.
        Caches as the model stores them (contiguous); the other arguments are made so here."""
        # The kernel reads raw memory: every shape is checked here, where a mistake is an error.
        B, H, capacity, D = k_cache.shape
        tensors = (q, k_cache, v_cache, er, valid)
        if any(t.device.type != "cpu" for t in tensors):
            raise ValueError("the attention kernel runs on the CPU")
        if any(c.dtype != torch.bfloat16 or not c.is_contiguous() for c in (k_cache, v_cache)):
            raise ValueError("the attention kernel reads contiguous bfloat16 caches")
        if v_cache.shape != k_cache.shape or q.shape != (B, H, D) or er.dim() != 2 or er.shape[1] != D:
            shapes = f"q {tuple(q.shape)}, caches {tuple(k_cache.shape)}, er {tuple(er.shape)}"
            raise ValueError(f"shapes do not agree: {shapes}")
        if D < 16 or D % 16:
            raise ValueError(f"head size {D} must be a positive multiple of 16")
        if valid.shape != (B,):  # its values the kernel keeps within 0 … min(capacity, len(er)) itself
            raise ValueError(f"valid must hold one length per row ({B}), got {tuple(valid.shape)}")
        q, er = q.detach().float().contiguous(), er.detach().float().contiguous()
        valid = valid.to(torch.int64).contiguous()
        f32 = {"dtype": torch.float32, "device": "cpu"}  # whatever torch's defaults are set to
        out, scratch = torch.empty(B, H, D, **f32), torch.empty(capacity, **f32)
        pointers = (q, k_cache, v_cache, er, out, scratch, valid)
        self._step(*(t.data_ptr() for t in pointers), H, B * H, capacity * D, capacity, er.shape[0], D)
        return out


def reference(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, er: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """What the kernel computes, in plain torch, row by row (for tests and for checking a fresh
    build): the model's eager attention for one row of length n = valid[b]."""
    B, H, _, D = k_cache.shape
    out = torch.zeros(B, H, D)
    for b, n in enumerate(valid.tolist()):
        if n > 0:
            keys, values = k_cache[b, :, :n].float(), v_cache[b, :, :n].float()
            logits = (keys @ q[b, :, :, None])[..., 0] + q[b] @ er[er.shape[0] - n :].T  # (H, n)
            out[b] = (logits.softmax(-1)[:, None] @ values)[:, 0]
    return out


def _private(path: Path) -> bool:
    """True when no one but us (and root) could change what `path` holds: it and every directory
    above it belong to us or root, and none is writable by others unless sticky (as /tmp is).
    `path` must already be resolved, so no symlink on the way can be swapped afterwards."""
    uid = os.getuid()
    for i, part in enumerate((path, *path.parents)):
        info = os.lstat(part)
        if info.st_uid not in (uid, 0) or (i == 0 and info.st_uid != uid):
            return False
        if info.st_mode & 0o022 and not (i > 0 and info.st_mode & stat.S_ISVTX):
            return False
    return True


def cache_dir() -> Path:
    """Where built kernels are kept: a library found there gets loaded into this process, so
    only a directory that no one else could write to, or swap, is used. Failing that, a fresh
    private directory in the temp dir, for this process alone (the kernel is built again)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "melomania" / "kernels"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = path.resolve(strict=True)
        if _private(path) and os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))


def cpu_signature() -> str:
    """-march=native builds for this CPU: a kernel built on another (a shared home) must not load."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _target(compiler: str | None = None) -> tuple[list[str], bytes, Path]:
    """The compiler command, the source, and where its build for this compiler and CPU is kept."""
    cc = shlex.split(compiler or os.environ.get("CC") or "cc")
    source = files("generator").joinpath("attention.c").read_bytes()
    version = subprocess.run([*cc, "--version"], capture_output=True, check=True, timeout=30).stdout
    recipe = [source, "\0".join(cc).encode(), version, " ".join(FLAGS).encode(), cpu_signature().encode()]
    digest = hashlib.sha256(b"\0".join(recipe)).hexdigest()[:16]
    return cc, source, cache_dir() / f"attention-{digest}.so"


def built(compiler: str | None = None) -> Path | None:
    """The kernel built for this source, compiler and CPU (by `build`, at install), or None."""
    _, _, target = _target(compiler)
    if target.is_file() and not target.is_symlink():
        _mark_used(target)
        return target
    if target.parent.name.startswith(SCRATCH_PREFIX):  # no cache could be kept: nothing to find
        shutil.rmtree(target.parent, ignore_errors=True)
    return None


def build(compiler: str | None = None) -> Path:
    """Build attention.c (or find it built) and return the shared library's path; raises
    OSError, ValueError (a `CC` that does not parse) or subprocess.CalledProcessError where that
    cannot be done. Run at install (`make setup`, `melomania build-kernel`, the Docker build),
    never on a user's request: `load` only loads what this built."""
    cc, source, target = _target(compiler)
    if target.is_file() and not target.is_symlink():
        _mark_used(target)
        return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, out = Path(tmp) / "attention.c", Path(tmp) / target.name
        src.write_bytes(source)
        subprocess.run([*cc, *FLAGS, "-o", str(out), str(src)], capture_output=True, check=True, timeout=120)
        os.replace(out, target)  # atomic: processes building at once all end with a whole file
    remove_unused(target.parent, keep=target)
    return target


def _mark_used(path: Path) -> None:
    """Stamp the kernel's access time with now, its modification time kept. Set explicitly,
    since mounts with relatime or noatime do not keep access times for us."""
    with contextlib.suppress(OSError):  # someone else's file in a shared cache: their stamp stands
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))


def remove_unused(directory: Path, keep: Path, days: float = UNUSED_DAYS) -> list[Path]:
    """Remove the kernels in `directory` (but `keep`) that no process has loaded for `days`; the
    paths removed. A process that has one loaded keeps its mapping: unlinking never breaks it."""
    cutoff = time.time() - days * 86400
    removed = []
    for path in directory.glob("attention-*.so"):
        try:
            info = path.lstat()
            if path != keep and stat.S_ISREG(info.st_mode) and max(info.st_atime, info.st_mtime) < cutoff:
                path.unlink()
                removed.append(path)
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


_loading = threading.Lock()
_loaded: dict[str, Any] = {}  # what load() found: "kernel" (or None), "tried_build"


def _load(build_if_missing: bool) -> AttentionKernel | None:
    try:
        path = build() if build_if_missing else built()
        if path is None:
            log.warning(
                "the attention kernel is not built for this machine (make setup, or melomania build-kernel); "
                "decoding keeps an fp32 cache"
            )
            return None
        kernel = AttentionKernel(ctypes.CDLL(str(path)))
        if path.parent.name.startswith(SCRATCH_PREFIX):  # mapped now; nothing to keep
            shutil.rmtree(path.parent, ignore_errors=True)
        gen = torch.Generator().manual_seed(0)
        for batch, heads, width, dim in ((1, 2, 5, 16), (3, 2, 16, 64), (2, 1, 9, 80)):
            q = torch.randn(batch, heads, dim, generator=gen)
            k_cache, v_cache = (torch.randn(batch, heads, 16, dim, generator=gen).bfloat16() for _ in range(2))
            er = torch.randn(32, dim, generator=gen)
            valid = torch.full((batch,), width)
            valid[0] = width // 2 + 1
            args = (q, k_cache, v_cache, er, valid)
            if not torch.allclose(kernel(*args), reference(*args), atol=1e-5):
                raise RuntimeError("the built kernel disagrees with the reference")
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip().splitlines() if exc.stderr else []
        log.warning("the attention kernel did not build (%s); decoding keeps an fp32 cache", err[-1] if err else exc)
        return None
    except (OSError, ValueError, AttributeError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("the attention kernel is unavailable (%s); decoding keeps an fp32 cache", exc)
        return None
    return kernel


def load(build_if_missing: bool = False) -> AttentionKernel | None:
    """The kernel built at install, checked against `reference`, or None where there is none
    (the log says why, once per process). `build_if_missing`: build it now (install, tests)."""
    with _loading:  # threads that start decoders together load it once
        kernel, tried_build = _loaded.get("kernel"), _loaded.get("tried_build")
        if "kernel" in _loaded and (kernel is not None or tried_build or not build_if_missing):
            return kernel  # known already: one warning per process, not one per call
        _loaded.update(kernel=_load(build_if_missing), tried_build=build_if_missing)
        return _loaded["kernel"]
