"""Resumable CPU training of the Music Transformer on the token shards.

Genre-balanced random windows with augmentation (transpose, tempo stretch, velocity jitter),
AdamW with warmup and cosine decay, gradient clipping, validation NLL per genre, and checkpoints
every few minutes holding model, optimizer, step and every RNG, so a stopped run resumes exactly.
"""

from __future__ import annotations

import csv
import math
import signal
import time
import tomllib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import vocab as V
from .checkpoint import FORMAT, FORMAT_VERSION
from .dataset import Shard
from .model import ModelConfig, MusicTransformer


@dataclass(frozen=True)
class TrainConfig:
    data: str = "data/dataset"
    out: str = "runs/default"
    # model
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    seq_len: int = 512  # also the model's context: no relative table row goes untrained
    dropout: float = 0.1
    # optimisation
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 200
    max_steps: int = 20_000
    max_minutes: float | None = None  # stop (with a checkpoint) after this long
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # data
    genre_balance: float = 0.5  # genre weight ∝ tokens^balance: 0 uniform, 1 proportional
    genre_weights: dict[str, float] | None = None  # then × these (a genre not named: 1; 0 leaves it out)
    transpose: int = 5
    stretch: float = 0.1
    velocity_jitter: int = 2
    # bookkeeping
    eval_every: int = 200
    eval_windows: int = 32  # per genre, fixed across the run
    checkpoint_minutes: float = 10.0
    seed: int = 0
    threads: int | None = None

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        raw = tomllib.loads(Path(path).read_text()) if path else {}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return replace(cls(**raw), **{k: v for k, v in overrides.items() if v is not None})

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            max_len=self.seq_len,
            dropout=self.dropout,
        )


# --- data --------------------------------------------------------------------------------------


def augment(window: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """Transpose within the piano range, stretch time shifts, shift velocities; on a copy."""
    w = window.astype(np.int64)
    notes = w < V.VELOCITY
    if cfg.transpose and notes.any():
        pitches = w[notes] % 128
        lo, hi = V.PIANO_RANGE
        down, up = max(-cfg.transpose, lo - int(pitches.min())), min(cfg.transpose, hi - int(pitches.max()))
        if down <= up:
            w[notes] += int(rng.integers(down, up + 1))
    shifts = (w >= V.TIME_SHIFT) & (w < V.END)
    if cfg.stretch and shifts.any():
        factor = 1.0 + rng.uniform(-cfg.stretch, cfg.stretch)
        ticks = np.clip(np.rint((w[shifts] - V.TIME_SHIFT + 1) * factor), 1, V.N_TIME_SHIFTS)
        w[shifts] = ticks.astype(np.int64) + V.TIME_SHIFT - 1
    vel = (w >= V.VELOCITY) & (w < V.TIME_SHIFT)
    if cfg.velocity_jitter and vel.any():
        j = int(rng.integers(-cfg.velocity_jitter, cfg.velocity_jitter + 1))
        w[vel] = np.clip(w[vel] - V.VELOCITY + j, 0, V.N_VELOCITY_BINS - 1) + V.VELOCITY
    return w


def sample_window(shard: Shard, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of up to `length` tokens, a piece chosen in proportion to its length."""
    sizes = np.diff(shard.offsets)
    i = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
    piece = shard.piece(i)
    start = int(rng.integers(0, max(1, len(piece) - length + 1)))
    return np.asarray(piece[start : start + length])


def make_example(genre: str, window: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[genre, w0, w1, …] shifted by one; padded positions are ignored by the loss."""
    seq = np.full(seq_len + 1, V.PAD, dtype=np.int64)
    seq[0] = V.genre_token(genre)
    seq[1 : 1 + len(window)] = window[:seq_len]
    return seq[:-1], seq[1:]


class Batches:
    """Genre-balanced training batches from a seeded numpy Generator whose state is checkpointed."""

    def __init__(self, shards: dict[str, Shard], cfg: TrainConfig):
        self.shards = {g: s for g, s in shards.items() if s.n_pieces}
        self.genres = list(self.shards)
        w = np.array([self.shards[g].n_tokens for g in self.genres], dtype=np.float64) ** cfg.genre_balance
        weights = {V.canonical_genre(g): float(x) for g, x in (cfg.genre_weights or {}).items()}
        w *= np.array([weights.get(g, 1.0) for g in self.genres])
        if not (w >= 0).all() or w.sum() <= 0:
            raise ValueError(f"genre_weights must be at least 0 and leave a genre to train on, got {cfg.genre_weights}")
        self.p = w / w.sum()
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(self.cfg.batch_size):
            g = self.genres[int(self.rng.choice(len(self.genres), p=self.p))]
            w = augment(sample_window(self.shards[g], self.cfg.seq_len, self.rng), self.rng, self.cfg)
            x, y = make_example(g, w, self.cfg.seq_len)
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def validation_set(shards: dict[str, Shard], cfg: TrainConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed windows per genre (no augmentation), the same for the whole run."""
    rng = np.random.default_rng(cfg.seed + 1)
    out = {}
    for g, shard in shards.items():
        if shard.n_pieces == 0:
            continue
        pairs = [make_example(g, sample_window(shard, cfg.seq_len, rng), cfg.seq_len) for _ in range(cfg.eval_windows)]
        out[g] = (torch.from_numpy(np.stack([x for x, _ in pairs])), torch.from_numpy(np.stack([y for _, y in pairs])))
    return out


def loss_of(model: MusicTransformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=V.PAD)


@torch.no_grad()
def validation_nll(
    model: MusicTransformer, val: dict[str, tuple[torch.Tensor, torch.Tensor]], batch: int = 8
) -> dict[str, float]:
    """Mean negative log-likelihood per event token, nats, per genre."""
    was_training = model.training
    model.eval()
    out = {}
    for g, (x, y) in val.items():
        total, count = 0.0, 0
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch])
            tgt = y[i : i + batch]
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=V.PAD, reduction="sum"
            ).item()
            count += int((tgt != V.PAD).sum())
        out[g] = total / max(count, 1)
    model.train(was_training)
    return out


# --- the loop ----------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        data = Path(cfg.data)
        self.train_shards = {g: Shard.load(data, g, "train") for g in V.GENRES}
        self.val = validation_set({g: Shard.load(data, g, "val") for g in V.GENRES}, cfg)
        torch.manual_seed(cfg.seed)
        self.model = MusicTransformer(cfg.model_config())
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "Er" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2 or "Er" in n]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.98),
        )
        self.batches = Batches(self.train_shards, cfg)
        self.step = 0
        self.tokens_seen = 0
        self.best_val = math.inf
        self.elapsed = 0.0  # training seconds over every session of this run
        if resume and (self.out / "last.pt").is_file():
            self._restore(torch.load(self.out / "last.pt", map_location="cpu", weights_only=False))

    # checkpoints hold everything needed to continue bit-for-bit
    def _state(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": asdict(self.model.config),
            "genres": list(V.GENRES),
            "model": self.model.state_dict(),
            "meta": {
                "step": self.step,
                "tokens_seen": self.tokens_seen,
                "train_seconds": round(self.elapsed),
                "train_config": asdict(self.cfg),
            },
            "train": {
                "optimizer": self.opt.state_dict(),
                "step": self.step,
                "tokens_seen": self.tokens_seen,
                "best_val": self.best_val,
                "elapsed": self.elapsed,
                "torch_rng": torch.get_rng_state(),
                "data_rng": self.batches.rng.bit_generator.state,
            },
        }

    def _restore(self, blob: dict) -> None:
        self.model.load_state_dict(blob["model"])
        t = blob["train"]
        self.opt.load_state_dict(t["optimizer"])
        self.step, self.tokens_seen, self.best_val, self.elapsed = (
            t["step"],
            t["tokens_seen"],
            t["best_val"],
            t["elapsed"],
        )
        torch.set_rng_state(t["torch_rng"])
        self.batches.rng.bit_generator.state = t["data_rng"]

    def save(self, name: str = "last.pt") -> Path:
        path = self.out / name
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self._state(), tmp)
        tmp.replace(path)
        return path

    def train_step(self) -> float:
        self.model.train()
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        x, y = self.batches.next()
        loss = loss_of(self.model, x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        self.tokens_seen += int((y != V.PAD).sum())
        return loss.item()

    def run(self, on_step: Callable[[Trainer, float, float], None] | None = None) -> None:
        """Train until max_steps or max_minutes; checkpoint on schedule and when stopping."""
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        started = time.monotonic()
        session_start_elapsed = self.elapsed
        last_ckpt = started
        stop = _StopFlag()
        with stop.on_signals(), open(log_path, "a", newline="") as fh:
            log = csv.writer(fh)
            if new_log:
                log.writerow(
                    ["step", "tokens", "elapsed_s", "lr", "loss", "tokens_per_s", *[f"val_{g}" for g in V.GENRES]]
                )
            try:
                while self.step < self.cfg.max_steps:
                    t0 = time.monotonic()
                    loss = self.train_step()
                    now = time.monotonic()
                    self.elapsed = session_start_elapsed + (now - started)
                    tps = self.cfg.batch_size * self.cfg.seq_len / max(now - t0, 1e-9)
                    val = {}
                    if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.max_steps:
                        val = validation_nll(self.model, self.val)
                        mean = sum(val.values()) / max(len(val), 1)
                        if mean < self.best_val:
                            self.best_val = mean
                            self.save("best.pt")
                    log.writerow(
                        [
                            self.step,
                            self.tokens_seen,
                            round(self.elapsed, 1),
                            f"{lr_at(self.step - 1, self.cfg):.6g}",
                            f"{loss:.4f}",
                            round(tps),
                            *[f"{val[g]:.4f}" if g in val else "" for g in V.GENRES],
                        ]
                    )
                    fh.flush()
                    if on_step:
                        on_step(self, loss, tps)
                    if now - last_ckpt >= self.cfg.checkpoint_minutes * 60:
                        self.save()
                        last_ckpt = now
                    if stop.requested or (
                        self.cfg.max_minutes is not None and (now - started) >= self.cfg.max_minutes * 60
                    ):
                        break
            finally:
                self.save()


class _StopFlag:
    """SIGTERM or SIGINT finish the current step, then the run checkpoints and returns."""

    requested = False

    @contextmanager
    def on_signals(self):
        def handler(signum, frame):
            self.requested = True

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)


def export(src: str | Path, dst: str | Path, fp16: bool = True, **meta) -> Path:
    """Strip optimizer and RNG state from a training checkpoint; optionally store fp16 weights."""
    blob = torch.load(src, map_location="cpu", weights_only=False)
    weights = {
        k: (v.half() if fp16 and v.is_floating_point() and k != "positional_encoding.pe" else v)
        for k, v in blob["model"].items()
    }
    out = {k: blob[k] for k in ("format", "version", "config", "genres")}
    out["model"] = weights
    out["meta"] = {**blob.get("meta", {}), **meta}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(out, tmp)
    tmp.replace(dst)
    return dst
