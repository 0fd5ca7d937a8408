"""Rendering in worker processes beside the generation thread.

Render threads inside the composing process held the GIL for their Python (the MIDI file, the
piano roll, the audio clean-up) while the generation thread took it back after each of the few
hundred torch ops of a step. In processes (and with attention reading keys in stored order),
eight tracks at once took 6.9 s instead of 8.6-9.2 s (bench/load.py, one composing thread).

They are started with `spawn` (never a fork of a process running OpenMP), at a slightly lower
priority so that a busy machine favours composing; they ignore Ctrl-C (the parent stops them)
and die with their parent.

A render process that dies (a crash in FluidSynth, the OOM killer) breaks the whole executor and
fails every track it held. The pool is replaced, and each of those tracks is rendered again in a
process of its own, so one track that always crashes fails only itself. Each process keeps its
temporary files in a scratch directory named for it, removed when it ends; a killed process
cannot do that, so every new one first removes those whose owner's lock has gone with it.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import logging
import multiprocessing
import multiprocessing.util
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

from generator.render import Tags
from generator.track import RenderedTrack, render_track

log = logging.getLogger(__name__)


PR_SET_PDEATHSIG = 1
SCRATCH_PREFIX = "melomania-renderer-"  # then the process id (for people), a dash, mkdtemp's letters
SCRATCH_LOCK = ".owner"  # held locked by the process for its lifetime; the kernel lets go as it dies
_scratch_lock: int | None = None  # the open lock, kept for the process's lifetime


def _start_process(niceness: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    _die_with(parent)
    os.nice(niceness)
    _own_scratch()


def _own_scratch() -> None:
    """Put this process's temporary files in a directory of its own, removed when it ends. If it
    cannot be made (a full disk, say), the default is kept: the render reports that, not this."""
    global _scratch_lock
    base = Path(tempfile.gettempdir())
    try:
        remove_abandoned_scratch(base)
        # Made under a name the cleaners pass over, and named for them only once locked.
        making = Path(tempfile.mkdtemp(prefix=f".{SCRATCH_PREFIX}", dir=base))
        _scratch_lock = os.open(making / SCRATCH_LOCK, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        fcntl.flock(_scratch_lock, fcntl.LOCK_EX)
        scratch = str(base / f"{SCRATCH_PREFIX}{os.getpid()}-{making.name[len(SCRATCH_PREFIX) + 1 :]}")
        os.rename(making, scratch)
    except OSError as exc:
        log.warning("render process: no scratch directory of its own (%s); using %s", exc, base)
        return
    tempfile.tempdir = scratch
    # Run as the process exits normally (multiprocessing's own exit hook); a kill skips it.
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(scratch,), kwargs={"ignore_errors": True}, exitpriority=0)


def remove_abandoned_scratch(base: Path) -> list[Path]:
    """Remove the scratch directories in `base` whose render process is gone: whose lock can be
    taken. A lock, unlike a process id, holds across containers sharing the directory."""
    removed = []
    for path in base.glob(f"{SCRATCH_PREFIX}*"):
        try:
            info = path.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue  # a link, or someone else's
            fd = os.open(path / SCRATCH_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its process is alive
            continue
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _die_with(parent: int) -> None:
    """Be killed when the parent dies. A worker killed with SIGKILL (the OOM killer, a crash)
    otherwise left its render processes idle for good, each holding a loaded soundfont: the task
    queue's pipe never closes, since every process holds both of its ends. Linux signals the death
    of the thread that started us: the event loop's, which lives as long as the runner."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no prctl: not Linux
        return
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("render process: could not ask to die with its parent: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _warm_up(soundfont: str | None) -> None:
    """Render one second of one note: loads the soundfont and imports what rendering needs (the
    loudness meter, the image library). With only the soundfont loaded, a process's first 30 s
    track took 1.06 s against 0.62 s rendered in-process; after this, 0.50 s."""
    from generator import vocab as V

    note = [V.VELOCITY + V.velocity_to_bin(80), V.NOTE_ON + 60, V.TIME_SHIFT + V.N_TIME_SHIFTS - 1, V.NOTE_OFF + 60]
    render_track([V.genre_token("calm"), *note], Tags("warm-up", "calm"), 0, soundfont)


class RenderPool:
    def __init__(self, workers: int, soundfont: str | None = None, niceness: int = 5):
        self.workers, self.soundfont, self.niceness = workers, soundfont, niceness
        self._closed = False
        self._pool = self._new_pool(workers)
        # Tracks a dead process took with it are rendered again one by one in pools of their own,
        # at most `workers` at a time: a batch's worth of fresh processes, each loading the
        # soundfont, could bring back the memory shortage that killed the first.
        self._solo_slots = asyncio.Semaphore(workers)
        self._solos: set[ProcessPoolExecutor] = set()

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process,
            initargs=(self.niceness, os.getpid()),
        )

    def warm_up(self) -> list[Future]:
        """Start the render processes and warm them up now, not while the first users' tracks
        wait. A failure here (no soundfont, say) is left for the first track's render to report."""
        futures = [self._pool.submit(_warm_up, self.soundfont) for _ in range(self.workers)]
        for future in futures:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: not logged at exit
        return futures

    async def render(
        self,
        tokens: Sequence[int],
        tags: Tags,
        program: int = 0,
        seed: int | None = None,
        primer_until: int | None = None,
        arrangement: str = "solo",
    ) -> RenderedTrack:
        """Render in a process; `seed` and `primer_until` (the tokens up to the primer's end) label
        the piano roll, and `seed` makes a band's choices (`arrangement` "band")."""
        loop = asyncio.get_running_loop()
        labelled = partial(render_track, seed=seed, primer_until=primer_until, arrangement=arrangement)
        args = (labelled, list(tokens), tags, program, self.soundfont)
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, *args)
        except BrokenProcessPool:
            if self._closed:
                raise
            log.warning("a render process died; rendering the track %r again on its own", tags.title)
            if self._pool is pool:  # the first of the tracks it took down replaces it
                self._pool = self._new_pool(self.workers)
                pool.shutdown(wait=False, cancel_futures=True)
                self.warm_up()
        async with self._solo_slots:
            if self._closed:
                raise BrokenProcessPool("the render pool was closed")
            solo = self._new_pool(1)
            self._solos.add(solo)
            try:
                return await loop.run_in_executor(solo, *args)
            finally:
                self._solos.discard(solo)
                solo.shutdown(wait=False, cancel_futures=True)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the render processes: queued renders are dropped, running ones may finish."""
        self._closed = True
        pools = [self._pool, *self._solos]

        def shut_down() -> None:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)
            # What processes killed since the last start left, where ours put it (the same
            # temporary directory, unless TMPDIR changed after this process first asked).
            remove_abandoned_scratch(Path(tempfile.gettempdir()))

        await asyncio.wait_for(asyncio.to_thread(shut_down), timeout)
