"""How loud and how busy the piano is around each moment, so the band follows it: a quiet passage
gets quiet parts, a passage where the piano rests gets no drums."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import vocab as V
from ..tokenizer import Note

STEP = 0.25  # seconds between the envelope's points
WINDOW = 2.0  # seconds either side that count towards a point


@dataclass(frozen=True)
class Dynamics:
    level: np.ndarray  # mean velocity of the piano's onsets near each point (the piece's mean where none)
    density: np.ndarray  # the piano's onsets per second near each point
    mean_level: float

    @classmethod
    def of(cls, piano: Sequence[Note]) -> Dynamics:
        if not piano:
            return cls(np.full(1, 64.0), np.zeros(1), 64.0)
        piano = sorted(piano)
        onsets = np.array([n.start for n in piano], dtype=np.float64) * V.TICK_SECONDS
        velocities = np.array([n.velocity for n in piano], dtype=np.float64)
        end = max(n.end for n in piano) * V.TICK_SECONDS
        points = np.arange(0.0, end + STEP, STEP)
        lo = np.searchsorted(onsets, points - WINDOW)
        hi = np.searchsorted(onsets, points + WINDOW)
        cum = np.concatenate([[0.0], np.cumsum(velocities)])
        counts = hi - lo
        mean = float(velocities.mean())
        level = np.where(counts > 0, (cum[hi] - cum[lo]) / np.maximum(counts, 1), mean)
        return cls(level, counts / (2 * WINDOW), mean)

    def _at(self, values: np.ndarray, seconds: float) -> float:
        return float(values[min(max(int(seconds / STEP + 0.5), 0), len(values) - 1)])

    def velocity(self, seconds: float, base: int, jitter: float = 0.0) -> int:
        """`base` (a part's velocity when the piano plays at 64) moved with the piano's loudness
        at `seconds`; `jitter` (±velocity units, already drawn) humanises it."""
        v = base + 0.8 * (self._at(self.level, seconds) - 64) + jitter
        return int(min(max(round(v), 8), 127))

    def busy(self, seconds: float) -> float:
        """The piano's onsets per second around `seconds`."""
        return self._at(self.density, seconds)

    def quiet(self, seconds: float) -> bool:
        """A soft or nearly silent passage, where drums thin out."""
        return self.busy(seconds) < 1.0 or self._at(self.level, seconds) < self.mean_level - 12
