"""MIDI → MP3 through FluidSynth and ffmpeg, and a piano-roll PNG for chat previews.

FluidSynth (the library, through pyfluidsynth) plays the MIDI file with a General MIDI soundfont
into memory; numpy trims the trailing silence, fades out and normalises loudness (EBU R128,
pyloudnorm) with a peak ceiling; ffmpeg encodes MP3 with ID3 tags. No torch here: render
workers and tests need none.

Each render thread keeps one synthesizer with the soundfont loaded. Starting the `fluidsynth`
program per track spent 0.23 s loading the 148 MB FluidR3 font before playing a note, more
than synthesising 30 s of piano took; with many users at once that was most of the render time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GeneratorError
from .midi_libs import fluidsynth, pretty_midi

SAMPLE_RATE = 44100
DEBIAN_SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
)
INSTALL_HINT = "install it with: sudo apt-get install fluidsynth fluid-soundfont-gm ffmpeg (or run make setup)"


class RenderError(GeneratorError):
    """Rendering could not run: the message says what to install or fix."""


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int = SAMPLE_RATE
    bitrate: str = "192k"
    target_lufs: float = -16.0
    peak_dbfs: float = -1.0  # ceiling after normalising, headroom for the MP3 encoder
    silence_dbfs: float = -60.0  # quieter than this at the end counts as silence
    fade_seconds: float = 1.5
    tail_seconds: float = 0.5  # room for the last note's release before the fade ends


@dataclass(frozen=True)
class Tags:
    title: str
    genre: str
    comment: str = ""
    artist: str = "Melomania"
    extra: dict[str, str] = field(default_factory=dict)


def find_soundfont(path: str | os.PathLike[str] | None = None) -> Path:
    """The soundfont to use: the one given, else Debian's FluidR3 General MIDI font."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RenderError(
                f"soundfont not found: {p} (set MELOMANIA_SOUNDFONT to an .sf2 file, or unset it "
                f"to use Debian's fluid-soundfont-gm)"
            )
        return p
    for p in DEBIAN_SOUNDFONTS:
        if p.is_file():
            return p
    raise RenderError(f"no General MIDI soundfont found; {INSTALL_HINT}, or set MELOMANIA_SOUNDFONT")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RenderError(f"{name} is not installed; {INSTALL_HINT}")
    return found


def load_fluidsynth():
    """The pyfluidsynth module, or RenderError saying how to install the library it wraps."""
    if fluidsynth is None:
        raise RenderError(f"the FluidSynth library (libfluidsynth) is not installed; {INSTALL_HINT}")
    return fluidsynth


class Synthesizer:
    """One FluidSynth instance with a soundfont loaded, rendering MIDI files offline.

    Not thread-safe: use `synthesizer()`, which keeps one per thread.
    """

    BLOCK = 4096  # frames per write; the player advances with the samples written

    def __init__(self, soundfont: Path, sample_rate: int = SAMPLE_RATE, gain: float = 0.6):
        self._fl = load_fluidsynth()
        # "sample" timing makes the MIDI player follow the samples we pull, as `fluidsynth -F` does,
        # instead of the wall clock.
        self._synth = self._fl.Synth(gain=gain, samplerate=sample_rate, **{"player.timing-source": "sample"})
        with openmp_threads(1):
            loaded = self._synth.sfload(str(soundfont))
        if loaded == -1:
            raise RenderError(f"FluidSynth cannot load the soundfont {soundfont}")
        self.sample_rate = sample_rate

    def render(self, midi_path: Path, silence_dbfs: float | None = None, tail_seconds: float = 0.0) -> np.ndarray:
        """(frames, 2) float32 in [-1, 1]: the file played from start to its last event, and on
        while its last notes ring.

        With `silence_dbfs`, rendering stops once every event has been played and the last
        `tail_seconds` were all quieter than that: `trim_and_fade` would cut the rest. A pad's
        release fades for seconds below hearing, and FluidSynth plays until every voice is done."""
        fl, synth = self._fl, self._synth
        synth.system_reset()
        synth.get_samples(self.sample_rate)  # let the previous track's reverb die away, unheard
        player = fl.new_fluid_player(synth.synth)
        ticks = _player_ticks() if silence_dbfs is not None else None
        quiet_level = 32768 * 10 ** ((silence_dbfs or 0) / 20)
        tail = int(tail_seconds * self.sample_rate) + self.BLOCK
        try:
            if fl.fluid_player_add(player, str(midi_path).encode()) == fl.FLUID_FAILED:
                raise RenderError("FluidSynth cannot read the MIDI file")
            fl.fluid_player_play(player)
            blocks, quiet_frames = [], 0
            while fl.fluid_player_get_status(player) == fl.FLUID_PLAYER_PLAYING:
                block = synth.get_samples(self.BLOCK)
                blocks.append(block)
                if ticks is None or ticks[0](player) < ticks[1](player):
                    continue  # notes still to come
                quiet_frames = quiet_frames + self.BLOCK if np.abs(block).max() <= quiet_level else 0
                if quiet_frames >= tail:
                    break
        finally:
            fl.delete_fluid_player(player)
        pcm = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)
        return pcm.reshape(-1, 2).astype(np.float32) / 32768.0


@functools.cache
def _player_ticks():
    """FluidSynth's (current tick, total ticks) of a player, which pyfluidsynth does not wrap;
    None where the library predates them (FluidSynth 2.0)."""
    fl = load_fluidsynth()
    current, total = (
        fl.cfunc(name, ctypes.c_int, ("player", ctypes.c_void_p, 1))
        for name in ("fluid_player_get_current_tick", "fluid_player_get_total_ticks")
    )
    return None if current is None or total is None else (current, total)


@contextlib.contextmanager
def openmp_threads(n: int) -> Iterator[None]:
    """Run the block with at most `n` OpenMP threads on this thread, if OpenMP is loaded.

    FluidSynth reads a soundfont's samples with an OpenMP team, and it shares one libgomp with
    torch (the same soname, loaded once) wherever one process both composes and renders, as the
    CLI does (the job runner renders in processes of its own). A render thread's team outlives
    the load; with it and the composing thread's team together holding more threads than there
    are cores, libgomp stops spinning and sleeps between parallel regions, and every later track
    composed with 2 torch threads took 3.3-3.9 s instead of 1.7-1.9 s. One thread loads the font
    just as well."""
    try:
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the one loaded, if any
    except OSError:  # FluidSynth built without OpenMP, or not Linux
        yield
        return
    before = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(n)
    try:
        yield
    finally:
        gomp.omp_set_num_threads(before)


_local = threading.local()


def synthesizer(soundfont: Path, sample_rate: int = SAMPLE_RATE) -> Synthesizer:
    """This thread's synthesizer for the soundfont, loaded on first use."""
    cache: dict[tuple[Path, int], Synthesizer] = _local.__dict__.setdefault("synths", {})
    key = (soundfont.resolve(), sample_rate)
    if key not in cache:
        cache[key] = Synthesizer(soundfont, sample_rate)
    return cache[key]


def trim_and_fade(audio: np.ndarray, rate: int, settings: AudioSettings = AudioSettings()) -> np.ndarray:
    """Cut the trailing silence (keeping a short tail), then fade the end out."""
    # The louder channel per frame; numpy's max along an axis of two is 50x slower than this.
    level = np.zeros(len(audio), dtype=audio.dtype)
    for channel in audio.T:
        np.maximum(level, np.abs(channel), out=level)
    loud = np.nonzero(level > 10 ** (settings.silence_dbfs / 20))[0]
    end = 0 if len(loud) == 0 else min(len(audio), loud[-1] + 1 + int(settings.tail_seconds * rate))
    audio = audio[:end].copy()
    fade = min(len(audio), int(settings.fade_seconds * rate))
    if fade:
        audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None] ** 2
    return audio


def normalise(audio: np.ndarray, rate: int, settings: AudioSettings = AudioSettings()) -> np.ndarray:
    """EBU R128 integrated loudness to the target, never above the peak ceiling."""
    if not len(audio) or not np.any(audio):
        return audio
    gain = 1.0
    if len(audio) > int(0.4 * rate):  # R128 gating needs at least one 400 ms block
        import pyloudnorm

        # Measured at half the rate: piano has little energy above 11 kHz, and it halves the cost.
        loudness = pyloudnorm.Meter(rate / 2).integrated_loudness(audio[::2])
        if np.isfinite(loudness):
            gain = 10 ** ((settings.target_lufs - loudness) / 20)
    peak = float(np.abs(audio).max()) * gain
    ceiling = 10 ** (settings.peak_dbfs / 20)
    if peak > ceiling:
        gain *= ceiling / peak
    return (audio * gain).astype(np.float32)


def encode_mp3(
    audio: np.ndarray, rate: int, mp3_path: Path, tags: Tags, settings: AudioSettings = AudioSettings()
) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    if pcm.ndim == 1 or pcm.shape[1] == 1:
        pcm = np.repeat(pcm.reshape(-1, 1), 2, axis=1)
    meta = {"title": tags.title, "artist": tags.artist, "genre": tags.genre, "comment": tags.comment, **tags.extra}
    cmd = [
        _tool("ffmpeg"),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "s16le",
        "-ar",
        str(rate),
        "-ac",
        "2",
        "-i",
        "-",
        "-ar",
        str(settings.sample_rate),
        "-ac",
        "2",
        "-codec:a",
        "libmp3lame",
        "-b:a",
        settings.bitrate,
        "-compression_level",  # LAME's fast algorithm: inaudible at 192 kbit/s, twice as fast as the default
        "7",
        "-id3v2_version",
        "3",
        "-f",
        "mp3",
    ]
    for k, v in meta.items():
        if v:
            cmd += ["-metadata", f"{k}={v}"]
    cmd.append(str(mp3_path))
    done = subprocess.run(cmd, input=pcm.tobytes(), capture_output=True)
    if done.returncode != 0:
        said = " ".join(done.stderr.decode(errors="replace").split())
        for message, code in (("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT)):
            if message in said:  # a full disk, so that callers can say so
                raise OSError(code, f"{message.lower()}: could not write {mp3_path.name}")
        raise RenderError(f"ffmpeg failed: {said[:300]}")


@dataclass(frozen=True)
class RenderTimings:
    audio_seconds: float
    synth_seconds: float
    encode_seconds: float


def render_mp3(
    midi: pretty_midi.PrettyMIDI,
    mp3_path: str | os.PathLike[str],
    tags: Tags,
    soundfont: str | os.PathLike[str] | None = None,
    program: int | None = None,
    settings: AudioSettings = AudioSettings(),
) -> RenderTimings:
    """Render `midi` to an MP3 at `mp3_path` (written atomically). Returns how long each part took."""
    sf = find_soundfont(soundfont)
    _tool("ffmpeg")  # before any work, not after
    if program is not None:
        for inst in midi.instruments:
            if not inst.is_drum:
                inst.program = program
    with tempfile.TemporaryDirectory(prefix="melomania-render-") as tmp:
        mid = Path(tmp) / "in.mid"
        midi.write(str(mid))
        return _render_file(mid, Path(mp3_path), tags, sf, settings)


def render_midi_file(
    midi_path: Path,
    mp3_path: str | os.PathLike[str],
    tags: Tags,
    soundfont: str | os.PathLike[str] | None = None,
    settings: AudioSettings = AudioSettings(),
) -> RenderTimings:
    """`render_mp3` for a MIDI file already on disk."""
    sf = find_soundfont(soundfont)
    _tool("ffmpeg")  # before synthesising, not after
    return _render_file(midi_path, Path(mp3_path), tags, sf, settings)


def _render_file(midi_path: Path, mp3_path: Path, tags: Tags, sf: Path, settings: AudioSettings) -> RenderTimings:
    """Synthesise, normalise and encode; the soundfont and ffmpeg are already checked."""
    import time

    t0 = time.perf_counter()
    synth = synthesizer(sf, settings.sample_rate)
    audio, rate = synth.render(midi_path, settings.silence_dbfs, settings.tail_seconds), synth.sample_rate
    t1 = time.perf_counter()
    audio = normalise(trim_and_fade(audio, rate, settings), rate, settings)
    part = mp3_path.with_name(f".{mp3_path.name}.part")
    encode_mp3(audio, rate, part, tags, settings)
    os.replace(part, mp3_path)
    t2 = time.perf_counter()
    return RenderTimings(len(audio) / rate, t1 - t0, t2 - t1)
