"""Data pipeline and training: split by piece, a smoke run that learns, exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from generator import load_model
from generator import vocab as V
from generator.tokenizer import Note, notes_to_midi
from training.dataset import BuildConfig, Shard, build
from training.train import TrainConfig, Trainer, augment, export


def write_corpus(root: Path, per_genre: int = 6) -> None:
    """A handful of small pieces per genre, each genre with its own simple texture."""
    rng = random.Random(0)
    for g_index, genre in enumerate(V.GENRES):
        folder = root / genre / "toy"
        folder.mkdir(parents=True)
        for i in range(per_genre):
            base, step = 48 + 5 * g_index + i, 12 + 6 * g_index
            notes = [
                Note(t * step, t * step + step - 2, base + (0, 4, 7, 12)[t % 4] + rng.choice((0, 12)), 60 + t % 30)
                for t in range(120)
            ]
            notes_to_midi(notes).write(str(folder / f"piece{i}.mid"))
        (folder / "broken.mid").write_bytes(b"MThd garbage")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root)
    out = root / "dataset"
    build(BuildConfig(corpus=root, out=out, val_fraction=0.2, jazz_leadsheets=False, ambient=False, workers=1))
    return out


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        n_layers=2,
        d_model=32,
        n_heads=2,
        d_ff=64,
        seq_len=64,
        batch_size=8,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        max_steps=60,
        eval_every=20,
        eval_windows=4,
        threads=1,
        dtype="fp32",
    )
    return TrainConfig(**(base | kw))


def test_split_is_by_piece_and_no_piece_is_on_both_sides(dataset):
    summary = json.loads((dataset / "summary.json").read_text())
    for genre in V.GENRES:
        train = set(json.loads((dataset / f"{genre}.train.pieces.json").read_text()))
        val = set(json.loads((dataset / f"{genre}.val.pieces.json").read_text()))
        assert train and val
        assert not train & val
        assert summary["genres"][genre]["val"]["pieces"] == len(val)
        shard = Shard.load(dataset, genre, "train")
        assert shard.n_pieces == len(train) and shard.tokens.dtype.name == "uint16"
    assert sum(summary["skipped"].values()) == 4  # one broken file per genre, counted with its reason


def test_augmentation_keeps_notes_in_piano_range_and_tokens_valid():
    rng = __import__("numpy").random.default_rng(0)
    window = __import__("numpy").array([256 + 20, 21, 300, 128 + 21, 256 + 31, 96, 387, 128 + 96])
    cfg = TrainConfig(transpose=5, stretch=0.1, velocity_jitter=2)
    for _ in range(50):
        w = augment(window, rng, cfg)
        notes = w[w < V.VELOCITY] % 128
        assert notes.min() >= V.PIANO_RANGE[0] and notes.max() <= V.PIANO_RANGE[1]
        assert ((w >= 0) & (w < V.END)).all()


def test_smoke_training_lowers_the_loss(dataset, tmp_path):
    trainer = Trainer(tiny_config(dataset, tmp_path / "run"))
    losses = [trainer.train_step() for _ in range(60)]
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    val = __import__("training.train", fromlist=["validation_nll"]).validation_nll(trainer.model, trainer.val)
    assert set(val) == set(V.GENRES) and all(v < losses[0] for v in val.values())


def test_resume_gives_the_identical_next_step_loss(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path / "run")
    first = Trainer(cfg)
    for _ in range(7):
        first.train_step()
    first.save()
    expected = [first.train_step() for _ in range(2)]

    resumed = Trainer(cfg, resume=True)
    assert resumed.step == 7
    assert [resumed.train_step() for _ in range(2)] == expected


def test_run_writes_log_and_checkpoints_that_load_and_export(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path / "run", max_steps=20, eval_every=10)
    Trainer(cfg).run()
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,tokens,elapsed_s,lr,loss") and len(log) == 21
    shipped = export(tmp_path / "run" / "best.pt", tmp_path / "small.pt", fp16=True)
    model = load_model(shipped).model
    assert model.config.max_len == 64 and model.Wout.weight.dtype == torch.float32
    assert shipped.stat().st_size < (tmp_path / "run" / "best.pt").stat().st_size


def test_sigterm_finishes_the_step_then_checkpoints(dataset, tmp_path):
    import os
    import signal

    cfg = tiny_config(dataset, tmp_path / "run", max_steps=50)
    trainer = Trainer(cfg)

    def stop_at_three(t, loss, tps):
        if t.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer.run(on_step=stop_at_three)
    assert trainer.step == 3
    assert Trainer(cfg, resume=True).step == 3


def test_genre_weights_scale_how_often_each_genre_is_drawn(dataset, tmp_path):
    from training.train import Batches

    shards = {g: Shard.load(dataset, g, "train") for g in V.GENRES}
    cfg = tiny_config(dataset, tmp_path, genre_balance=0.0, genre_weights={"jazz": 0, "ambient": 3})
    batches = Batches(shards, cfg)
    drawn = {g: 0 for g in V.GENRES}
    for _ in range(40):
        x, _ = batches.next()
        for first in x[:, 0].tolist():
            drawn[V.GENRES[first - V.GENRE]] += 1
    assert drawn["jazz"] == 0
    assert drawn["calm"] > 2 * max(drawn["classic"], drawn["pop"])  # 3:1:1 expected
    with pytest.raises(ValueError, match="genre_weights"):
        Batches(shards, tiny_config(dataset, tmp_path, genre_weights={g: 0 for g in V.GENRES}))


def test_minutes_schedule_anneals_over_the_wall_clock_budget():
    from training.train import lr_at

    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=1_000_000, max_minutes=2.0, schedule="minutes")
    assert lr_at(5, cfg, seconds=100.0) == pytest.approx(6e-4)  # warm-up stays in steps
    assert lr_at(50, cfg, seconds=0.0) == pytest.approx(1e-3, rel=1e-3)
    assert lr_at(50, cfg, seconds=60.0) == pytest.approx(5.5e-4)  # half the budget: half the cosine
    assert lr_at(50, cfg, seconds=120.0) == pytest.approx(1e-4)
    assert lr_at(50, TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=1_000_000), seconds=60.0) > 9.9e-4


def test_minutes_schedule_needs_a_time_budget(dataset, tmp_path):
    with pytest.raises(ValueError, match="needs max_minutes above 0, got None"):
        Trainer(tiny_config(dataset, tmp_path / "run", schedule="minutes"))
    with pytest.raises(ValueError, match="needs max_minutes above 0, got -1"):
        Trainer(tiny_config(dataset, tmp_path / "run", schedule="minutes", max_minutes=-1.0))
    with pytest.raises(ValueError, match="one of steps, minutes, got 'hours'"):
        Trainer(tiny_config(dataset, tmp_path / "run", schedule="hours", max_minutes=1.0))


def test_minutes_schedule_counts_the_runs_training_time_across_resumes(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path / "run", schedule="minutes", max_minutes=10.0, max_steps=10_000)
    trainer = Trainer(cfg)
    trainer.step = cfg.warmup_steps
    trainer.elapsed = 300.0  # half the budget spent in earlier sessions
    trainer.train_step()
    assert trainer.opt.param_groups[0]["lr"] == pytest.approx((cfg.lr + cfg.min_lr) / 2)
    trainer.elapsed = 600.0
    trainer.save()
    resumed = Trainer(cfg, resume=True)
    resumed.run()  # the budget is spent: one step at the floor, then it stops
    assert resumed.step == cfg.warmup_steps + 2
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(cfg.min_lr)


def test_a_run_stopped_by_time_evaluates_its_last_step(dataset, tmp_path):
    cfg = tiny_config(dataset, tmp_path / "run", max_minutes=1e-4, eval_every=1000, schedule="minutes")
    trainer = Trainer(cfg)
    trainer.run()
    last = (tmp_path / "run" / "log.csv").read_text().splitlines()[-1].split(",")
    assert 0 < trainer.step < cfg.max_steps and int(last[0]) == trainer.step
    assert all(float(v) > 0 for v in last[-len(V.GENRES) :])
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=False)["meta"]["step"] == trainer.step
