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

from generator import vocab as V
from generator.checkpoint import FORMAT, FORMAT_VERSION
from generator.controls import ATTRIBUTES, SOURCES, Controls, ControlSpec, measure
from generator.device import resolve_device
from generator.model import ModelConfig, MusicTransformer

from .dataset import Shard


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
    # "steps": the cosine spans max_steps, and max_minutes caps each session; "minutes": the cosine
    # spans max_minutes of training wall clock, the whole run's budget across resumes, so a run
    # given a time budget (a lent GPU) ends annealed whatever its speed
    schedule: str = "steps"
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # data
    genre_balance: float = 0.5  # genre weight ∝ tokens^balance: 0 uniform, 1 proportional
    genre_weights: dict[str, float] | None = None  # then × these (a genre not named: 1; 0 leaves it out)
    # share of a genre's windows drawn from pieces our realisers wrote (a genre not named: by tokens);
    # realised ambient outweighs the real calm clips 4:1 in tokens, so left alone it crowds them out
    realised_share: dict[str, float] | None = None
    transpose: int = 5
    stretch: float = 0.1
    velocity_jitter: int = 2
    # bookkeeping
    eval_every: int = 200
    eval_windows: int = 32  # per genre, fixed across the run
    checkpoint_minutes: float = 10.0
    seed: int = 0
    threads: int | None = None
    # attribute controls (generator/controls.py): a prefix after the genre token
    controls: bool = True
    control_dropout: float = 0.15  # each attribute "unknown" this often …
    control_drop_all: float = 0.25  # … and every attribute at once this often
    # a source token after the controls: real piece or realised by our code (generator/controls.py);
    # `compose_as` is the source each genre composes as (a genre not named: unknown)
    source_control: bool = False
    compose_as: dict[str, str] | None = None
    # genres whose real pieces get a genre token of their own, each started from another genre's
    # trained token ({calm = "pop"}: the real calm clips are gentle pop-piano covers)
    split_genres: dict[str, str] | None = None
    # what the optimizer moves: "all", or "split" (only the split genres' new token rows, every
    # other weight frozen: what the initial weights compose stays exactly as it was)
    trainable: str = "all"
    # > 0: every window but a split genre's real ones is learned from the initial weights'
    # predictions (KL, this weight) instead of its data (learning without forgetting), so what
    # the model composed before moves as little as it can while the split token is learned. Use
    # it with dropout 0: the teacher predicts without dropout, and a model with it learns to undo it
    anchor: float = 0.0
    # precision and device: "auto" measures fp32 against bf16 autocast and keeps the faster
    dtype: str = "auto"  # auto | fp32 | bf16
    device: str = "auto"  # auto | cpu | cuda[:N]
    compile: bool = False  # torch.compile the model (kept only where it measures faster)
    init: str | None = None  # start from these weights (a shipped or training checkpoint), not random

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        raw = tomllib.loads(Path(path).read_text()) if path else {}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return replace(cls(**raw), **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def evaluating(cls, model: MusicTransformer, eval_windows: int = 32) -> TrainConfig:
        """The settings that give `model`'s own prefix layout to `validation_set`."""
        spec = model.controls
        return cls(
            seq_len=model.config.max_len,
            eval_windows=eval_windows,
            controls=spec is not None,
            source_control=bool(spec and spec.sources),
            compose_as=dict(spec.compose_as) if spec else None,
            # which token a split genre started as matters only when training starts
            split_genres={g: g for g in spec.split} if spec and spec.split else None,
        )

    def control_spec(self) -> ControlSpec | None:
        if not self.controls:
            return None
        split = tuple(self.split_genres or ())
        if not self.source_control:
            return ControlSpec(split=split)
        return ControlSpec(sources=SOURCES, compose_as=self.compose_as or {}, split=split)

    def model_config(self) -> ModelConfig:
        spec = self.control_spec()
        return ModelConfig(
            vocab_size=V.VOCAB_SIZE + (spec.size if spec else 0),
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


def sample_window(
    shard: Shard, length: int, rng: np.random.Generator, realised_share: float | None = None
) -> tuple[np.ndarray, str | None]:
    """A random window of up to `length` tokens, a piece chosen in proportion to its length, and
    the source of that piece (None where the shard does not say); with `realised_share`, first
    realised or real pieces with that probability (where the shard has both)."""
    p = np.diff(shard.offsets).astype(np.float64)
    kinds = shard.realised
    if realised_share is not None and kinds is not None and kinds.any() and not kinds.all():
        pick_realised = rng.random() < realised_share
        p[kinds != pick_realised] = 0.0
    i = int(rng.choice(len(p), p=p / p.sum()))
    piece = shard.piece(i)
    start = int(rng.integers(0, max(1, len(piece) - length + 1)))
    source = None if kinds is None else SOURCES[int(kinds[i])]
    return np.asarray(piece[start : start + length]), source


def make_example(
    genre: str, window: np.ndarray, seq_len: int, controls: list[int] = (), first: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """[genre, controls…, w0, w1, …] shifted by one. Padded positions and the control tokens are
    ignored by the loss: controls are given, never predicted. `first`: another genre token."""
    prefix = [V.genre_token(genre) if first is None else first, *controls]
    seq = np.full(seq_len + 1, V.PAD, dtype=np.int64)
    seq[: len(prefix)] = prefix
    body = window[: seq_len + 1 - len(prefix)]
    seq[len(prefix) : len(prefix) + len(body)] = body
    y = seq[1:].copy()
    y[: len(prefix) - 1] = V.PAD
    return seq[:-1], y


def window_controls(
    window: np.ndarray,
    spec: ControlSpec | None,
    rng: np.random.Generator | None,
    cfg: TrainConfig,
    source: str | None = None,
) -> list[int]:
    """The control prefix of a training window: its own measured bins and its source, some
    dropped to unknown (at random with `rng`; none without it, as for validation)."""
    if spec is None:
        return []
    kept = window[: cfg.seq_len - spec.length]  # what make_example keeps after the prefix
    bins = spec.bins(measure(kept.tolist()))
    if rng is not None:
        if rng.random() < cfg.control_drop_all:
            bins, source = Controls(), None
        else:
            drop = rng.random(len(ATTRIBUTES)) < cfg.control_dropout
            bins = Controls(**{a: None if d else bins.get(a) for a, d in zip(ATTRIBUTES, drop)})
            if spec.sources and rng.random() < cfg.control_dropout:
                source = None
    return spec.tokens(bins, source)


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
        shares = {V.canonical_genre(g): float(x) for g, x in (cfg.realised_share or {}).items()}
        if any(not 0.0 <= x <= 1.0 for x in shares.values()):
            raise ValueError(f"realised_share must be between 0 and 1, got {cfg.realised_share}")
        self.shares = [shares.get(g) for g in self.genres]
        self.cfg = cfg
        self.spec = cfg.control_spec()
        self.rng = np.random.default_rng(cfg.seed)
        split = self.spec.split if self.spec else ()
        self.split_rows = torch.tensor([self.spec.genre_token(g, "real") for g in split], dtype=torch.long)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(self.cfg.batch_size):
            k = int(self.rng.choice(len(self.genres), p=self.p))
            g = self.genres[k]
            window, source = sample_window(self.shards[g], self.cfg.seq_len, self.rng, self.shares[k])
            w = augment(window, self.rng, self.cfg)
            controls = window_controls(w, self.spec, self.rng, self.cfg, source)
            x, y = make_example(g, w, self.cfg.seq_len, controls, first_token(self.spec, g, source))
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def validation_set(
    shards: dict[str, Shard], cfg: TrainConfig, known_controls: bool = False, known_source: bool = True
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed windows per genre (no augmentation), the same for the whole run. Controls are
    "unknown" unless `known_controls`, so the NLL compares with a model that has none; the source
    (where the spec has one) is the window's own, a fact about the data like its genre."""
    rng = np.random.default_rng(cfg.seed + 1)
    spec = cfg.control_spec()
    out = {}
    for g, shard in shards.items():
        if shard.n_pieces == 0:
            continue
        windows = [sample_window(shard, cfg.seq_len, rng) for _ in range(cfg.eval_windows)]
        pairs = [
            make_example(
                g,
                w,
                cfg.seq_len,
                window_controls(w, spec, None, cfg, told) if known_controls else _unknown(spec, told),
                first_token(spec, g, source),
            )
            for w, source, told in ((w, s, s if known_source else None) for w, s in windows)
        ]
        out[g] = (torch.from_numpy(np.stack([x for x, _ in pairs])), torch.from_numpy(np.stack([y for _, y in pairs])))
    return out


def first_token(spec: ControlSpec | None, genre: str, source: str | None) -> int:
    """A window's genre token: a split genre's real pieces have their own, whether or not the
    source token says so (the split is the piece's identity, the source token a control)."""
    return spec.genre_token(genre, source) if spec else V.genre_token(genre)


def _unknown(spec: ControlSpec | None, source: str | None = None) -> list[int]:
    return spec.tokens(Controls(), source) if spec else []


def loss_of(model: MusicTransformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x).float()  # the loss in fp32 whatever the products were
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=V.PAD)


def anchored_loss(
    model: MusicTransformer,
    teacher: MusicTransformer,
    x: torch.Tensor,
    y: torch.Tensor,
    split_rows: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """Cross-entropy on the windows that start with a split genre's own token; on every other
    window `weight` × KL(teacher ‖ model) over the events, the teacher being the initial weights.
    Averaged over every target token, so both kinds count as often as they are drawn."""
    logits = model(x).float()[..., : V.VOCAB_SIZE]
    own = torch.isin(x[:, 0], split_rows.to(x.device))
    counted = y != V.PAD
    ce = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=V.PAD, reduction="none")  # (B, T)
    total = ce[own].sum()
    if not own.all():
        with torch.no_grad():
            target = F.log_softmax(teacher(x[~own]).float()[..., : V.VOCAB_SIZE], dim=-1)
        kl = F.kl_div(F.log_softmax(logits[~own], dim=-1), target, log_target=True, reduction="none").sum(-1)
        total = total + weight * kl[counted[~own]].sum()
    return total / counted.sum().clamp(min=1)


def anchor_model(cfg: TrainConfig, device: torch.device) -> MusicTransformer | None:
    """The frozen initial weights that `anchored_loss` keeps the model near (None: no anchor)."""
    if cfg.anchor <= 0:
        return None
    if not cfg.init or not cfg.split_genres:
        raise ValueError("anchor needs init (the weights to stay near) and split_genres (what may move)")
    teacher = MusicTransformer(cfg.model_config())
    initialise_from(teacher, cfg.init)
    start_split_tokens(teacher, cfg)
    return teacher.to(device).eval().requires_grad_(False)


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
        device = next(model.parameters()).device
        for i in range(0, len(x), batch):
            # over the events only, as the decoder samples them: comparable with a model without controls
            logits = model(x[i : i + batch].to(device)).float()[..., : V.VOCAB_SIZE]
            tgt = y[i : i + batch].to(device)
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=V.PAD, reduction="sum"
            ).item()
            count += int((tgt != V.PAD).sum())
        out[g] = total / max(count, 1)
    model.train(was_training)
    return out


# --- the loop ----------------------------------------------------------------------------------


SCHEDULES = ("steps", "minutes")


def lr_at(step: int, cfg: TrainConfig, seconds: float = 0.0) -> float:
    """Linear warm-up over steps, then a cosine to min_lr over the steps left or, with
    schedule = "minutes", over max_minutes of wall clock (`seconds`: the run's training seconds so far)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.schedule == "minutes":
        progress = max(progress, seconds / (cfg.max_minutes * 60))
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, log: Callable[[str], None] | None = None):
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
        if cfg.schedule == "minutes" and not (cfg.max_minutes and cfg.max_minutes > 0):
            raise ValueError(f"schedule = 'minutes' needs max_minutes above 0, got {cfg.max_minutes}")
        self.cfg = cfg
        self.log = log or (lambda message: None)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = training_device(cfg.device)
        data = Path(cfg.data)
        self.train_shards = {g: Shard.load(data, g, "train") for g in V.GENRES}
        self.val = validation_set({g: Shard.load(data, g, "val") for g in V.GENRES}, cfg)
        torch.manual_seed(cfg.seed)
        self.model = MusicTransformer(cfg.model_config())
        if cfg.init and not (resume and (self.out / "last.pt").is_file()):
            self.log(initialise_from(self.model, cfg.init))
            self.log(start_split_tokens(self.model, cfg))
        self.model.to(self.device)
        self.teacher = anchor_model(cfg, self.device)
        self.opt = torch.optim.AdamW(parameter_groups(self.model, cfg), lr=cfg.lr, betas=(0.9, 0.98))
        self.batches = Batches(self.train_shards, cfg)
        self.step = 0
        self.tokens_seen = 0
        self.best_val = math.inf
        self.elapsed = 0.0  # training seconds over every session of this run
        if resume and (self.out / "last.pt").is_file():
            self._restore(torch.load(self.out / "last.pt", map_location="cpu", weights_only=False))
        # Weights, gradients and optimizer state stay fp32 whatever the precision of the
        # products, so a run resumes across dtypes (and devices) unchanged.
        self.dtype = choose_dtype(self.model, cfg, self.device, self.log)
        self.forward = self.model
        if cfg.compile:
            self.forward = torch.compile(self.model)

    # checkpoints hold everything needed to continue bit-for-bit
    def _state(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": asdict(self.model.config),
            "genres": list(V.GENRES),
            "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "controls": self.batches.spec.as_dict() if self.batches.spec else None,
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
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
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
        if self.device.type == "cuda" and t.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(t["cuda_rng"], self.device)
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
            group["lr"] = lr_at(self.step, self.cfg, self.elapsed)
        x, y = self.batches.next()
        x, y = x.to(self.device), y.to(self.device)
        with autocast(self.device, self.dtype):
            if self.teacher is None:
                loss = loss_of(self.forward, x, y)
            else:
                loss = anchored_loss(self.forward, self.teacher, x, y, self.batches.split_rows, self.cfg.anchor)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.cfg.grad_clip)
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
                    spent = self.elapsed if self.cfg.schedule == "minutes" else now - started
                    out_of_time = self.cfg.max_minutes is not None and spent >= self.cfg.max_minutes * 60
                    last = self.step == self.cfg.max_steps or out_of_time
                    val = {}
                    # the last step is evaluated too: a run stopped by time ends on its annealed weights
                    if self.step % self.cfg.eval_every == 0 or last:
                        with autocast(self.device, self.dtype):
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
                            f"{self.opt.param_groups[0]['lr']:.6g}",
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
                    if stop.requested or out_of_time:
                        break
            finally:
                self.save()


# --- precision, device and starting weights ---------------------------------------------------

DTYPES = ("auto", "fp32", "bf16")


def training_device(name: str) -> torch.device:
    """'auto': the first GPU when there is one, else the CPU; one asked for and absent is a
    ValueError naming the devices there are (generator.device, as for composing)."""
    return torch.device(resolve_device(name))


@contextmanager
def autocast(device: torch.device, dtype: str):
    """bf16 products where chosen (CPU or CUDA autocast), plain fp32 otherwise."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        yield


def step_seconds(
    model: MusicTransformer, cfg: TrainConfig, device: torch.device, dtype: str, rows: int = 2, steps: int = 1
) -> float:
    """Seconds per forward and backward pass of `rows` windows of random events (after one
    warm-up); gradients are cleared again, so the weights are untouched. A few rows are enough
    to rank the precisions and keep the measurement to seconds where bf16 is emulated."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V.END, (rows, cfg.seq_len), generator=g).to(device)
    was_training = model.training
    model.train()
    times = []
    # Dropout draws from the global generator: measuring must not move it, or a resumed run
    # would no longer continue exactly.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        times = _timed_passes(model, x, device, dtype, steps)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return min(times)


def _timed_passes(
    model: MusicTransformer, x: torch.Tensor, device: torch.device, dtype: str, steps: int
) -> list[float]:
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = loss_of(model, x, x)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    return times


def choose_dtype(
    model: MusicTransformer, cfg: TrainConfig, device: torch.device, log: Callable[[str], None] = print
) -> str:
    """The precision of the products: as asked, or for 'auto' whichever measures faster here
    (bf16 autocast wins where the CPU multiplies bfloat16 in hardware and loses 5-10x where it
    is emulated, so flags are not asked; a GPU with bf16 takes it without measuring)."""
    if cfg.dtype not in DTYPES:  # no fp16: it would need loss scaling, which training does not do
        raise ValueError(f"training dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.dtype != "auto":
        return cfg.dtype
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    fp32, bf16 = step_seconds(model, cfg, device, "fp32"), step_seconds(model, cfg, device, "bf16")
    chosen = "bf16" if bf16 < fp32 else "fp32"
    tokens = 2 * cfg.seq_len
    log(f"precision: fp32 {tokens / fp32:,.0f}, bf16 {tokens / bf16:,.0f} tokens/s (forward and backward): {chosen}")
    return chosen


def initialise_from(model: MusicTransformer, path: str | Path) -> str:
    """Copy a checkpoint's weights into `model` (a shipped fp16 one or a training one). A model
    whose vocabulary is larger (control tokens added) keeps the checkpoint's rows for the events
    and its own fresh rows for the new tokens; every other tensor must match exactly."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    weights = blob["model"] if isinstance(blob, dict) and "model" in blob else blob
    own = model.state_dict()
    grown = []
    for name, tensor in own.items():
        if name not in weights:
            raise ValueError(f"{path} has no tensor {name}")
        src = weights[name].to(tensor.dtype)
        if src.shape == tensor.shape:
            own[name] = src
        elif name in ("embedding.weight", "Wout.weight", "Wout.bias") and src.shape[1:] == tensor.shape[1:]:
            if src.shape[0] > tensor.shape[0]:
                raise ValueError(f"{path}'s vocabulary ({src.shape[0]}) is larger than the model's ({tensor.shape[0]})")
            fresh = tensor.clone()
            fresh[: src.shape[0]] = src
            own[name] = fresh
            grown.append(name)
        else:
            raise ValueError(f"{path}: {name} has shape {tuple(src.shape)}, the model needs {tuple(tensor.shape)}")
    model.load_state_dict(own, strict=True)
    extra = f"; new vocabulary rows in {', '.join(grown)}" if grown else ""
    return f"initialised from {path}{extra}"


TRAINABLE = ("all", "split")


def parameter_groups(model: MusicTransformer, cfg: TrainConfig) -> list[dict]:
    """AdamW's groups: weight decay on matrices only. With `trainable = "split"` one group, the
    embedding, whose gradient is kept to the split genres' rows: Adam moves a row with no gradient
    not at all and the group has no decay, so every other weight stays bit for bit."""
    if cfg.trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {cfg.trainable!r}")
    if cfg.trainable == "split":
        spec = cfg.control_spec()
        if not (spec and spec.split):
            raise ValueError('trainable = "split" needs split_genres')
        rows = torch.tensor([spec.genre_token(g, "real") for g in spec.split])
        for p in model.parameters():
            p.requires_grad_(False)
        table = model.embedding.weight
        table.requires_grad_(True)
        keep = torch.zeros(table.shape[0], 1, dtype=table.dtype, device=table.device)
        keep[rows] = 1.0
        table.register_hook(lambda grad: grad * keep)
        return [{"params": [table], "weight_decay": 0.0}]
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "Er" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "Er" in n]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def start_split_tokens(model: MusicTransformer, cfg: TrainConfig) -> str:
    """Each split genre's new token starts as the trained token of the genre it is started from,
    so it is told apart from its own genre's token from the first step and has a prior to start
    from (a random row would have neither)."""
    spec = cfg.control_spec()
    started = []
    with torch.no_grad():
        for genre, like in (cfg.split_genres or {}).items():
            row = spec.genre_token(genre, "real")
            model.embedding.weight[row] = model.embedding.weight[V.genre_token(like)]
            started.append(f"{V.canonical_genre(genre)} (real) as {V.canonical_genre(like)}")
    return f"split genre tokens started: {', '.join(started)}" if started else "no split genre tokens"


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
    if blob.get("controls"):
        out["controls"] = blob["controls"]
    out["model"] = weights
    out["meta"] = {**blob.get("meta", {}), **meta}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(out, tmp)
    tmp.replace(dst)
    return dst
