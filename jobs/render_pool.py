"""Rendering in worker processes beside the generation thread.

Render threads inside the composing process held the GIL for their Python (the MIDI file, the
piano roll, the audio clean-up) while the generation thread took it back after each of the few
hundred torch ops of a step, so eight tracks at once composed about a second slower than the same
batch with nothing rendering. Processes share only the cores with it. They are started with
`spawn` (never a fork of a process running OpenMP) and run at a lower priority, so that on a
small machine the scheduler keeps the generation thread on its core.

A render process that dies (a crash in FluidSynth, the OOM killer) breaks the whole executor;
the pool is then replaced and the track rendered once more, so no job is lost with it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from generator.render import Tags
from generator.track import RenderedTrack, render_track

log = logging.getLogger(__name__)


def _lower_priority(niceness: int) -> None:
    os.nice(niceness)


def _warm_up(soundfont: str | None) -> None:
    """Render one second of one note: loads the soundfont and imports what rendering needs (the
    loudness meter, the image library). With only the soundfont loaded, a process's first 30 s
    track took 1.06 s against 0.62 s rendered in-process; after this, 0.50 s."""
    from generator import vocab as V

    note = [V.VELOCITY + V.velocity_to_bin(80), V.NOTE_ON + 60, V.TIME_SHIFT + V.N_TIME_SHIFTS - 1, V.NOTE_OFF + 60]
    render_track([V.genre_token("calm"), *note], Tags("warm-up", "calm"), 0, soundfont)


class RenderPool:
    def __init__(self, workers: int, soundfont: str | None = None, niceness: int = 19):
        self.workers, self.soundfont, self.niceness = workers, soundfont, niceness
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lower_priority,
            initargs=(self.niceness,),
        )

    def warm_up(self) -> list[Future]:
        """Start every render process and warm it up now, not while the first users' tracks wait.
        A failure here (no soundfont, say) is left for the first track's render to report."""
        futures = [self._pool.submit(_warm_up, self.soundfont) for _ in range(self.workers)]
        for future in futures:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: not logged at exit
        return futures

    async def render(self, tokens: Sequence[int], tags: Tags, program: int = 0) -> RenderedTrack:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool
            try:
                return await loop.run_in_executor(pool, render_track, list(tokens), tags, program, self.soundfont)
            except BrokenProcessPool:
                if attempt == 2:
                    raise
                log.warning("a render process died; starting new ones and rendering the track again")
                if self._pool is pool:  # the first of the tracks it took down replaces it
                    self._pool = self._new_pool()
                    pool.shutdown(wait=False, cancel_futures=True)
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
