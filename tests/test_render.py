"""Rendering through the real FluidSynth, soundfont and ffmpeg (the piano roll: test_pianoroll.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator.instruments import instrument_program
from generator.render import AudioSettings, RenderError, Tags, find_soundfont, render_mp3, trim_and_fade
from generator.tokenizer import Note, notes_to_midi

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = str(Path(__file__).parents[1])


def probe(path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def decode(path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "2", "-ar", "44100", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768


def melody(seconds: float = 6.0) -> list[Note]:
    step = 25  # 250 ms per note
    return [Note(i * step, i * step + step - 3, 60 + (0, 4, 7, 12, 7, 4)[i % 6], 70) for i in range(int(seconds * 4))]


def test_mp3_is_44k_stereo_192k_tagged_and_as_long_as_the_music(tmp_path):
    mp3 = tmp_path / "t.mp3"
    timings = render_mp3(notes_to_midi(melody(6.0)), mp3, Tags("Ambient #42", "ambient", "seed=42 temperature=0.9"))
    info = probe(mp3)
    stream, fmt = info["streams"][0], info["format"]
    assert stream["codec_name"] == "mp3" and int(stream["sample_rate"]) == 44100 and stream["channels"] == 2
    assert 170_000 <= int(fmt["bit_rate"]) <= 200_000
    tags = {k.lower(): v for k, v in fmt["tags"].items()}
    assert tags["title"] == "Ambient #42" and tags["artist"] == "Melomania" and tags["genre"] == "ambient"
    assert "seed=42" in tags["comment"]
    # the music is 6 s; the release tail is kept short and trailing silence cut
    assert 6.0 <= float(fmt["duration"]) <= 7.5
    assert timings.audio_seconds == pytest.approx(float(fmt["duration"]), abs=0.2)


def test_trailing_silence_is_trimmed_and_the_end_fades_out(tmp_path):
    midi = notes_to_midi([Note(0, 100, 60, 90)])
    midi.instruments[0].notes.append(__import__("pretty_midi").Note(1, 30, 9.0, 9.01))  # inaudible, far later
    mp3 = tmp_path / "t.mp3"
    render_mp3(midi, mp3, Tags("t", "pop"))
    audio = decode(mp3)
    assert len(audio) / 44100 < 4.0
    tail = np.abs(audio[-2000:]).max()
    assert tail < 0.01


def test_trim_keeps_sound_on_either_channel_and_cuts_silence_on_both():
    rate, settings = 1000, AudioSettings(tail_seconds=0.5, fade_seconds=0.2)
    audio = np.zeros((5 * rate, 2), dtype=np.float32)
    audio[: 2 * rate, 0] = 0.5  # left sounds for 2 s
    audio[: 3 * rate, 1] = 0.5  # right for 3 s: the louder channel per frame decides
    audio[4 * rate, 1] = 1e-4  # below -60 dBFS: silence
    trimmed = trim_and_fade(audio, rate, settings)
    assert len(trimmed) == 3 * rate + rate // 2
    assert trimmed[-1].max() == 0.0 and trimmed[2 * rate, 1] == 0.5  # faded at the end, untouched before
    assert len(trim_and_fade(audio[:, ::-1].copy(), rate, settings)) == 3 * rate + rate // 2  # left longer


def test_loudness_is_normalised_near_minus_16_lufs(tmp_path):
    import pyloudnorm

    quiet = notes_to_midi([Note(n.start, n.end, n.pitch, 25) for n in melody(8.0)])
    loud = notes_to_midi([Note(n.start, n.end, n.pitch, 120) for n in melody(8.0)])
    levels = []
    for name, midi in (("quiet", quiet), ("loud", loud)):
        render_mp3(midi, tmp_path / f"{name}.mp3", Tags(name, "pop"))
        audio = decode(tmp_path / f"{name}.mp3")
        levels.append(pyloudnorm.Meter(44100).integrated_loudness(audio))
        assert np.abs(audio).max() <= 10 ** (-0.5 / 20)  # peak ceiling, with encoder slack
    assert abs(levels[0] - levels[1]) < 2.0
    assert all(-19.0 < lv < -14.0 for lv in levels)


def test_instrument_choice_changes_the_sound(tmp_path):
    midi = notes_to_midi(melody(3.0))
    render_mp3(midi, tmp_path / "piano.mp3", Tags("p", "pop"), program=instrument_program("piano"))
    render_mp3(
        notes_to_midi(melody(3.0)), tmp_path / "organ.mp3", Tags("o", "pop"), program=instrument_program("organ")
    )
    a, b = decode(tmp_path / "piano.mp3"), decode(tmp_path / "organ.mp3")
    n = min(len(a), len(b))
    assert np.abs(a[:n] - b[:n]).mean() > 0.01


def test_unknown_instrument_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: piano, bright piano, electric piano"):
        instrument_program("kazoo")
    assert instrument_program("Electric-Piano") == 4


def test_missing_soundfont_and_missing_ffmpeg_say_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(RenderError, match=r"soundfont not found: .*MELOMANIA_SOUNDFONT"):
        find_soundfont(tmp_path / "none.sf2")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on the PATH
    with pytest.raises(RenderError, match="ffmpeg is not installed; install it with: sudo apt-get install"):
        render_mp3(notes_to_midi(melody(1.0)), tmp_path / "x.mp3", Tags("x", "pop"))
    assert not (tmp_path / "x.mp3").exists()


def test_missing_fluidsynth_library_says_how_to_install(tmp_path):
    code = (
        "from generator.render import Tags, render_mp3\n"
        "from generator.tokenizer import Note, notes_to_midi\n"
        "render_mp3(notes_to_midi([Note(0, 50, 60, 80)]), 'x.mp3', Tags('x', 'pop'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent / "no_fluidsynth"), ROOT])}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "the FluidSynth library (libfluidsynth) is not installed; install it with: sudo apt-get" in done.stderr
    assert not (tmp_path / "x.mp3").exists()


def test_one_synthesizer_renders_track_after_track_without_carrying_sound_over(tmp_path):
    """The per-thread synthesizer is reused: a quiet track after a loud one starts clean, and
    the same file sounds the same every time."""
    from generator.render import find_soundfont, synthesizer

    loud, quiet = tmp_path / "loud.mid", tmp_path / "quiet.mid"
    notes_to_midi([Note(0, 300, p, 120) for p in (48, 55, 60, 64, 67)]).write(str(loud))
    notes_to_midi([Note(100, 110, 60, 1)]).write(str(quiet))
    synth = synthesizer(find_soundfont())
    assert synth is synthesizer(find_soundfont())
    first = synth.render(loud)
    assert np.abs(first).max() > 0.05
    assert 3.0 <= len(first) / synth.sample_rate < 10.0  # the chord, then its release rings out
    after = synth.render(quiet)
    assert np.abs(after[: synth.sample_rate // 2]).max() < 1e-3  # nothing of the chord before the note
    again = synth.render(loud)  # the same sound again (not the same samples: the effects' LFOs run on)
    assert abs(len(again) - len(first)) < synth.sample_rate // 10
    assert np.sqrt((again**2).mean()) == pytest.approx(np.sqrt((first**2).mean()), rel=0.05)


def test_rendering_stops_when_the_last_release_falls_below_hearing(tmp_path):
    """A pad's release rings for seconds under -60 dBFS; the synthesizer stops once the file's
    events are played and the tail has been that quiet for `tail_seconds`, and the trimmed audio
    is as long as a full render's."""
    from generator.render import find_soundfont, synthesizer

    pad = tmp_path / "pad.mid"
    notes_to_midi([Note(0, 200, p, 90) for p in (48, 55, 64)], program=94).write(str(pad))  # Halo Pad
    synth = synthesizer(find_soundfont())
    settings = AudioSettings()
    full = synth.render(pad)
    early = synth.render(pad, settings.silence_dbfs, settings.tail_seconds)
    assert len(early) < len(full) - synth.sample_rate  # over a second of inaudible tail not rendered
    kept_full, kept_early = (len(trim_and_fade(a, synth.sample_rate, settings)) for a in (full, early))
    # the same within what two renders of one file differ by (the effects' LFOs run on between
    # them, and a slow release crosses -60 dBFS a little earlier or later)
    assert abs(kept_full - kept_early) < settings.tail_seconds * synth.sample_rate
    assert len(early) / synth.sample_rate > 2.0  # the events themselves all played


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenMP starts no extra threads on one core")
def test_loading_the_soundfont_leaves_no_openmp_threads_behind():
    """FluidSynth reads a soundfont with an OpenMP team that shares torch's libgomp; a render
    thread's idle team made libgomp put the generation thread's team to sleep between ops."""
    code = """
import os, threading
import torch  # as in the job runner: one libgomp for torch and FluidSynth
from generator.render import Synthesizer, find_soundfont
torch.ones(1 << 22).sum()  # past ATen's grain: the main thread's own team exists already
counts, loaded, finish = [], threading.Event(), threading.Event()
def render_thread():
    counts.append(len(os.listdir("/proc/self/task")))
    Synthesizer(find_soundfont())
    counts.append(len(os.listdir("/proc/self/task")))
    loaded.set()
    finish.wait()
t = threading.Thread(target=render_thread)
t.start(); loaded.wait(); print(counts[0], counts[1]); finish.set(); t.join()
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # OpenMP's own default: all cores
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert after == before
