"""Attribute controls: measuring, the control vocabulary, the dataset prefix, bf16 training that
resumes exactly, weights grown from a checkpoint without controls, and composing with them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_training import dataset, tiny_config  # noqa: F401  (the module-scoped toy dataset)

from generator import GenerationRequest, SamplingParams, load_model
from generator import vocab as V
from generator.checkpoint import save_checkpoint
from generator.controls import ControlError, Controls, ControlSpec, measure, parse_level, word_controls
from generator.decoding import generate, window
from generator.model import ModelConfig, MusicTransformer
from training.dataset import Shard
from training.train import Batches, Trainer, anchored_loss, initialise_from, make_example, window_controls


def shift(seconds: float) -> list[int]:
    ticks = round(seconds * 100)
    out = []
    while ticks > 0:
        out.append(V.TIME_SHIFT + min(ticks, 100) - 1)
        ticks -= 100
    return out


def test_measure_counts_notes_per_second_mean_velocity_and_keys_down_at_onsets():
    vel = V.VELOCITY + V.velocity_to_bin(64)
    tokens = [vel, V.NOTE_ON + 60, V.NOTE_ON + 64, *shift(1.0), V.NOTE_ON + 67, *shift(1.0)]
    tokens += [V.NOTE_OFF + 60, V.NOTE_OFF + 64, V.NOTE_OFF + 67, V.NOTE_ON + 72, *shift(2.0)]
    a = measure(tokens)
    assert a.density == pytest.approx(4 / 4.0)
    assert a.loudness == pytest.approx(V.bin_to_velocity(V.velocity_to_bin(64)))
    assert a.polyphony == pytest.approx((2 + 3 + 1) / 3)  # onsets with 2, 3 and 1 keys down
    assert measure([V.NOTE_ON + 60]) is None  # no time: no rate


def test_control_tokens_round_trip_and_follow_the_event_vocabulary():
    spec = ControlSpec()
    assert spec.first == V.VOCAB_SIZE and spec.size == 18
    for controls in (Controls(), Controls(0, 4, 2), Controls(density=3)):
        tokens = spec.tokens(controls)
        assert len(tokens) == 3 and all(V.VOCAB_SIZE <= t < V.VOCAB_SIZE + spec.size for t in tokens)
        assert spec.decode(tokens) == controls
    edges = spec.edges["density"]
    assert spec.bin_of("density", edges[0] - 0.01) == 0 and spec.bin_of("density", edges[-1]) == 4
    assert ControlSpec.from_dict(spec.as_dict()) == spec


def test_levels_and_words_people_type():
    assert parse_level("density", "low") == 1 and parse_level("density", "very-high") == 4
    assert parse_level("loudness", "soft") == 1 and parse_level("polyphony", 2) == 2
    with pytest.raises(ControlError, match="very low, low, medium, high, very high"):
        parse_level("density", "loads")
    controls, rest = word_controls(["very", "sparse", "soft", "60s", "thick"])
    assert controls == Controls(density=0, loudness=1, polyphony=3) and rest == ["60s"]
    with pytest.raises(Exception, match="density must be a level from 0 to 4"):
        SamplingParams(density=5)


def test_controls_round_trip_through_the_dataset_builder(dataset, tmp_path):  # noqa: F811
    cfg = tiny_config(dataset, tmp_path, seq_len=64, control_dropout=0.0, control_drop_all=0.0)
    spec = cfg.control_spec()
    shard = Shard.load(dataset, "pop", "train")
    window_ = np.asarray(shard.piece(0)[:61])
    x, y = make_example("pop", window_, 64, window_controls(window_, spec, np.random.default_rng(0), cfg))
    assert x[0] == V.genre_token("pop")
    assert spec.decode(x[1:4].tolist()) == spec.bins(measure(window_.tolist()))
    assert (x[4:] == window_[:60]).all()
    assert (y[:3] == V.PAD).all() and y[3] == window_[0]  # controls are given, never a target

    batches = Batches({g: Shard.load(dataset, g, "train") for g in V.GENRES}, tiny_config(dataset, tmp_path))
    x, _ = batches.next()
    prefixes = [spec.decode(row[1:4]) for row in x.tolist()]
    assert all(isinstance(c, Controls) for c in prefixes)


def test_bf16_training_runs_and_resumes_exactly_and_across_dtypes(dataset, tmp_path):  # noqa: F811
    cfg = tiny_config(dataset, tmp_path / "run", dtype="bf16")
    first = Trainer(cfg)
    assert first.dtype == "bf16" and first.model.embedding.weight.dtype == torch.float32
    losses = [first.train_step() for _ in range(5)]
    assert all(np.isfinite(losses))
    first.save()
    expected = [first.train_step() for _ in range(2)]
    resumed = Trainer(cfg, resume=True)
    assert resumed.step == 5 and [resumed.train_step() for _ in range(2)] == expected
    in_fp32 = Trainer(tiny_config(dataset, tmp_path / "run", dtype="fp32"), resume=True)
    assert in_fp32.step == 5 and in_fp32.dtype == "fp32"
    assert abs(in_fp32.train_step() - expected[0]) < 0.1  # same weights and batch, other rounding


def test_auto_dtype_is_chosen_by_measurement_and_bad_choices_are_refused(dataset, tmp_path):  # noqa: F811
    trainer = Trainer(tiny_config(dataset, tmp_path / "run", dtype="auto"))
    assert trainer.dtype in ("fp32", "bf16")
    with pytest.raises(ValueError, match="dtype must be one of auto, fp32, bf16"):
        Trainer(tiny_config(dataset, tmp_path / "run2", dtype="fp16"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            Trainer(tiny_config(dataset, tmp_path / "run3", device="cuda"))


def small(vocab_size: int) -> MusicTransformer:
    torch.manual_seed(0)
    return MusicTransformer(ModelConfig(vocab_size=vocab_size, n_layers=1, d_model=32, n_heads=2, d_ff=64, max_len=64))


def test_init_grows_the_vocabulary_keeping_every_trained_row(tmp_path):
    plain = small(V.VOCAB_SIZE)
    save_checkpoint(plain, tmp_path / "plain.pt")
    grown = small(V.VOCAB_SIZE + ControlSpec().size)
    fresh_rows = grown.embedding.weight[V.VOCAB_SIZE :].clone()
    message = initialise_from(grown, tmp_path / "plain.pt")
    assert "new vocabulary rows" in message
    assert torch.equal(grown.embedding.weight[: V.VOCAB_SIZE], plain.embedding.weight)
    assert torch.equal(grown.Wout.weight[: V.VOCAB_SIZE], plain.Wout.weight)
    assert torch.equal(grown.embedding.weight[V.VOCAB_SIZE :], fresh_rows)
    assert torch.equal(
        grown.transformer.encoder.layers[0].linear1.weight, plain.transformer.encoder.layers[0].linear1.weight
    )


def test_a_checkpoint_with_controls_composes_with_them_and_one_without_refuses_them(tmp_path):
    spec = ControlSpec()
    model = small(V.VOCAB_SIZE + spec.size)
    model.controls = spec
    save_checkpoint(model, tmp_path / "ours.pt")
    ours = load_model(tmp_path / "ours.pt")
    assert ours.controls == spec
    asked = GenerationRequest("calm", SamplingParams(density=1, loudness=0), max_new_tokens=40, seed=3)
    (piece,) = generate(ours.model, [asked])
    assert piece.tokens[:4] == [V.genre_token("calm"), *spec.tokens(Controls(1, 0, None))]
    assert all(t < V.END for t in piece.new_tokens)

    plain = small(V.VOCAB_SIZE)
    save_checkpoint(plain, tmp_path / "plain.pt")
    without = load_model(tmp_path / "plain.pt")
    assert without.controls is None
    (piece,) = generate(without.model, [GenerationRequest("calm", max_new_tokens=20, seed=3)])
    assert piece.tokens[0] == V.genre_token("calm") and len(piece.new_tokens) == 20
    with pytest.raises(ControlError, match="no attribute controls"):
        generate(without.model, [asked])


def test_the_sliding_window_keeps_the_whole_prefix():
    prefix = [V.genre_token("jazz"), 394, 401, 408]
    body = [V.VELOCITY + 10, V.NOTE_ON + 60] + [V.TIME_SHIFT + 9] * 100
    cut = window(prefix + body, 64, prefix=4)
    assert cut[:4] == prefix and len(cut) <= 32
    assert V.NOTE_ON + 60 in cut[4:]  # the held key is restated after the prefix


def test_the_published_layout_still_loads_strictly_and_composes_without_controls(tmp_path):
    from test_checkpoint import published_layout, random_state_dict

    path = tmp_path / "music-composer.pt"
    torch.save(random_state_dict(published_layout(n_layers=2, d=64, ff=128, head_dim=16, max_len=128)), path)
    model = load_model(path).model
    assert model.controls is None and model.config.vocab_size == V.VOCAB_SIZE
    (piece,) = generate(model, [GenerationRequest("jazz", max_new_tokens=24, seed=1)])
    assert piece.tokens[0] == V.genre_token("jazz") and len(piece.new_tokens) == 24
    grown = torch.load(path) | {"embedding.weight": torch.zeros(V.VOCAB_SIZE + 18, 64)}
    torch.save(grown, path)
    with pytest.raises(Exception, match="vocabulary has 412 tokens"):
        load_model(path)


def test_measuring_the_precision_leaves_the_random_stream_alone(dataset, tmp_path):  # noqa: F811
    from training.train import step_seconds

    trainer = Trainer(tiny_config(dataset, tmp_path / "run"))
    before = torch.get_rng_state()
    step_seconds(trainer.model, trainer.cfg, trainer.device, "fp32")
    assert torch.equal(torch.get_rng_state(), before)  # so a resumed run's dropout goes on exactly


def test_a_job_asking_controls_of_a_model_without_them_is_refused_but_a_reroll_composes():
    from generator.errors import GeneratorError
    from jobs.admission import admit
    from jobs.api import ComposeRequest

    asked = ComposeRequest(platform="telegram", user_id="1", genre="calm", sampling={"density": 0, "temperature": 0.8})
    stored, generation = admit(asked)
    assert generation.sampling.density == 0 and stored.seed is not None and generation.seed == stored.seed
    with pytest.raises(GeneratorError, match="no attribute controls; compose without density very low"):
        admit(asked, controls=False)
    reroll = ComposeRequest(
        platform="telegram", user_id="1", genre="calm", sampling={"density": 0, "temperature": 0.8}, lineage="reroll"
    )
    _, request = admit(reroll, controls=False)
    assert not request.sampling.controls.any and request.sampling.temperature == 0.8


def test_admission_checks_overrides_against_the_ranges_people_may_ask_for_and_the_stored_form_round_trips():
    from generator.errors import SamplingError
    from generator.params import RANGES, Overrides
    from jobs.admission import admit
    from jobs.api import ComposeRequest

    high = RANGES["temperature"].high
    with pytest.raises(SamplingError, match=f"temperature must be from 0.1 to {high:g}"):
        admit(ComposeRequest(platform="telegram", user_id="1", genre="jazz", sampling={"temperature": high + 0.5}))
    request, _ = admit(ComposeRequest(platform="telegram", user_id="1", genre="jazz", sampling=Overrides(top_k=30)))
    again = ComposeRequest.from_json(request.to_json())
    assert again == request and again.sampling == Overrides(top_k=30)


def test_a_source_token_follows_the_controls_and_older_vocabularies_keep_their_ids():
    older = ControlSpec()
    spec = ControlSpec(sources=("real", "realised"), compose_as={"calm": "realised", "pop": "real"})
    assert spec.size == older.size + 3 and spec.length == 4
    assert spec.tokens(Controls(0, 4, 2))[:3] == older.tokens(Controls(0, 4, 2))  # attribute ids unchanged
    seen = set()
    for source in ("real", "realised", None):
        tokens = spec.tokens(Controls(density=1), source)
        assert spec.decode(tokens) == Controls(density=1) and spec.decode_source(tokens) == source
        assert V.VOCAB_SIZE + older.size <= tokens[3] < V.VOCAB_SIZE + spec.size
        seen.add(tokens[3])
    assert len(seen) == 3
    assert spec.prefix("ambient", Controls())[-1] == spec.tokens(Controls(), "realised")[-1]
    assert spec.prefix("pop", Controls())[-1] == spec.tokens(Controls(), "real")[-1]
    assert spec.prefix("jazz", Controls())[-1] == spec.tokens(Controls(), None)[-1]  # not named: unknown
    assert ControlSpec.from_dict(spec.as_dict()) == spec
    assert "sources" not in older.as_dict() and ControlSpec.from_dict(older.as_dict()) == older
    with pytest.raises(ControlError, match="lacks"):
        ControlSpec(sources=("real",), compose_as={"calm": "realised"})
    with pytest.raises(ControlError, match="unknown source"):
        ControlSpec(sources=("recorded",))


def test_training_windows_carry_the_source_of_their_piece(dataset, tmp_path):  # noqa: F811
    vel = V.VELOCITY + V.velocity_to_bin(50)
    real = [vel, *[t for _ in range(40) for t in (V.NOTE_ON + 60, V.TIME_SHIFT + 20, V.NOTE_OFF + 60)]]
    realised = [vel, *[t for _ in range(40) for t in (V.NOTE_ON + 72, V.TIME_SHIFT + 20, V.NOTE_OFF + 72)]]
    shard = Shard(
        "calm",
        np.array(real + realised, dtype=np.uint16),
        np.array([0, len(real), len(real) + len(realised)]),
        np.array([False, True]),
    )
    cfg = tiny_config(
        dataset, tmp_path, source_control=True, transpose=0, control_dropout=0.0, control_drop_all=0.0, batch_size=32
    )
    spec = cfg.control_spec()
    x, _ = Batches({"calm": shard}, cfg).next()
    sources = [spec.decode_source(row[1:5]) for row in x.tolist()]
    assert set(sources) == {"real", "realised"}
    for row, source in zip(x.tolist(), sources):
        assert (V.NOTE_ON + 72 in row) == (source == "realised")
        assert row[0] == V.genre_token("calm")

    # split: the real pieces have a genre token of their own, whether the source token is told or not
    split = replace(cfg, split_genres={"calm": "pop"}, control_drop_all=1.0)
    spec = split.control_spec()
    x, _ = Batches({"calm": shard}, split).next()
    own = spec.genre_token("calm", "real")
    assert own == V.VOCAB_SIZE + spec.size - 1 and own != V.genre_token("calm")
    for row in x.tolist():
        assert spec.decode_source(row[1:5]) is None  # every control dropped
        assert row[0] == (V.genre_token("calm") if V.NOTE_ON + 72 in row else own)
    assert {row[0] for row in x.tolist()} == {own, V.genre_token("calm")}


def test_a_split_genre_composes_as_its_source_and_its_token_starts_as_another_genres(dataset, tmp_path):  # noqa: F811
    spec = ControlSpec(sources=("real", "realised"), compose_as={"calm": "realised", "pop": "real"}, split=("calm",))
    assert spec.size == ControlSpec().size + 4 and ControlSpec.from_dict(spec.as_dict()) == spec
    assert spec.prefix("ambient", Controls())[0] == V.genre_token("calm")  # the realised pieces' token
    assert replace(spec, compose_as={"calm": "real"}).prefix("calm", Controls())[0] == spec.genre_token("calm", "real")
    assert spec.genre_token("pop", "real") == V.genre_token("pop")  # not split
    with pytest.raises(ControlError, match="real source"):
        ControlSpec(sources=("realised",), split=("calm",))

    cfg = tiny_config(dataset, tmp_path / "run", source_control=True, split_genres={"calm": "pop"})
    plain = small(V.VOCAB_SIZE)
    save_checkpoint(plain, tmp_path / "plain.pt")
    trainer = Trainer(replace(cfg, n_layers=1, d_model=32, n_heads=2, d_ff=64, init=str(tmp_path / "plain.pt")))
    rows = trainer.model.embedding.weight
    assert torch.equal(rows[spec.genre_token("calm", "real")], plain.embedding.weight[V.genre_token("pop")])
    assert not torch.equal(rows[V.genre_token("calm")], rows[spec.genre_token("calm", "real")])


def test_a_split_needs_no_source_token_and_can_be_learned_alone_with_every_other_weight_frozen(dataset, tmp_path):  # noqa: F811
    spec = ControlSpec(split=("calm",))
    assert spec.size == ControlSpec().size + 1 and ControlSpec.from_dict(spec.as_dict()) == spec
    assert spec.genre_token("calm", "real") == V.VOCAB_SIZE + spec.size - 1
    assert spec.prefix("ambient", Controls())[0] == V.genre_token("calm")  # composing is unchanged
    assert spec.tokens(Controls(), "real") == ControlSpec().tokens(Controls())  # no source token

    plain = small(V.VOCAB_SIZE + ControlSpec().size)
    plain.controls = ControlSpec()
    save_checkpoint(plain, tmp_path / "plain.pt")
    cfg = tiny_config(
        dataset,
        tmp_path / "run",
        n_layers=1,
        split_genres={"calm": "pop"},
        trainable="split",
        init=str(tmp_path / "plain.pt"),
        max_steps=6,
        eval_every=100,
    )
    trainer = Trainer(cfg)
    trainer.run()
    own = spec.genre_token("calm", "real")
    after = trainer.model.state_dict()
    for name, tensor in plain.state_dict().items():
        if name == "embedding.weight":
            assert torch.equal(after[name][:own], tensor)  # every trained row, as it was
            assert not torch.equal(after[name][own], tensor[V.genre_token("pop")])  # the new one learned
        elif name.startswith("Wout"):
            assert torch.equal(after[name][: tensor.shape[0]], tensor)
        else:
            assert torch.equal(after[name], tensor), name
    with pytest.raises(ValueError, match="needs split_genres"):
        Trainer(replace(cfg, split_genres=None, out=str(tmp_path / "other")))


def test_an_anchored_run_learns_the_split_windows_from_data_and_the_rest_from_the_initial_weights(dataset, tmp_path):  # noqa: F811
    plain = small(V.VOCAB_SIZE + ControlSpec().size)
    save_checkpoint(plain, tmp_path / "plain.pt")
    cfg = tiny_config(
        dataset,
        tmp_path / "run",
        n_layers=1,
        dropout=0.0,
        split_genres={"calm": "calm"},
        anchor=1.0,
        init=str(tmp_path / "plain.pt"),
        max_steps=4,
        eval_every=100,
        batch_size=16,
    )
    trainer = Trainer(cfg)
    x, y = trainer.batches.next()
    own = torch.isin(x[:, 0], trainer.batches.split_rows)
    assert 0 < int(own.sum()) < len(x)  # both kinds in the batch
    # at the start the model is its teacher: no KL, only the split windows' cross-entropy counts
    loss = anchored_loss(trainer.model.eval(), trainer.teacher, x, y, trainer.batches.split_rows, 1.0)
    logits = trainer.model(x[own])[..., : V.VOCAB_SIZE]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y[own], ignore_index=V.PAD, reduction="sum")
    assert loss.item() == pytest.approx(ce.item() / int((y != V.PAD).sum()), rel=1e-5)
    trainer.run()
    moved = anchored_loss(trainer.model.eval(), trainer.teacher, x[~own], y[~own], trainer.batches.split_rows, 1.0)
    assert 0 < moved.item() < 0.5  # the rest moved, a little
    with pytest.raises(ValueError, match="anchor needs init"):
        Trainer(replace(cfg, init=None, out=str(tmp_path / "other")))


def test_a_checkpoint_with_sources_composes_each_genre_as_its_declared_source(tmp_path):
    spec = ControlSpec(sources=("real", "realised"), compose_as={"calm": "realised", "classic": "real"})
    model = small(V.VOCAB_SIZE + spec.size)
    model.controls = spec
    save_checkpoint(model, tmp_path / "ours.pt")
    ours = load_model(tmp_path / "ours.pt")
    assert ours.controls == spec
    requests = [
        GenerationRequest(g, SamplingParams(density=0), max_new_tokens=24, seed=5) for g in ("ambient", "classic")
    ]
    calm, classic = generate(ours.model, requests)
    assert calm.tokens[:5] == [V.genre_token("calm"), *spec.tokens(Controls(density=0), "realised")]
    assert classic.tokens[:5] == [V.genre_token("classic"), *spec.tokens(Controls(density=0), "real")]
    assert all(t < V.END for t in calm.new_tokens + classic.new_tokens)
