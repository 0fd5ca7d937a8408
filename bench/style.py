"""Does a piece sound like its genre beyond pitch classes: a nearest-centroid style classifier over
rhythm, texture, register, dynamics and tonal clarity, fitted on real validation excerpts.

Used by bench/quality.py. The classifier's accuracy on held-out real excerpts (fitted on the
other half) is the ceiling: generated pieces cannot be told apart better than real ones.
"""

from __future__ import annotations

import numpy as np

from generator.tokenizer import Note

FEATURES = (
    "log notes/s",
    "log median note length",
    "polyphony",
    "mean pitch",
    "pitch spread",
    "mean velocity",
    "velocity spread",
    "log median onset gap",
    "tonal clarity",
)


def features(notes: list[Note], tonal_clarity: float) -> np.ndarray:
    """One piece as a vector in the order of FEATURES; `tonal_clarity` is its best key-profile
    correlation (from bench/quality.py's key finding)."""
    starts = np.array([n.start for n in notes], dtype=float)
    ends = np.array([n.end for n in notes], dtype=float)
    pitches = np.array([n.pitch for n in notes], dtype=float)
    velocities = np.array([n.velocity for n in notes], dtype=float)
    seconds = max(ends.max() - starts.min(), 1.0) / 100
    onsets = np.unique(starts)
    gaps = np.diff(onsets) / 100 if len(onsets) > 1 else np.array([seconds])
    sounding = [((starts <= s) & (ends > s)).sum() for s in onsets]
    return np.array(
        [
            np.log(len(notes) / seconds),
            np.log(np.median(ends - starts) / 100),
            float(np.mean(sounding)),
            pitches.mean(),
            pitches.std(),
            velocities.mean(),
            velocities.std(),
            np.log(np.median(gaps)),
            tonal_clarity,
        ]
    )


class NearestCentroid:
    """Each genre a mean in feature space, standardised by the spread of all real excerpts."""

    def __init__(self, real: dict[str, np.ndarray]):
        everything = np.concatenate(list(real.values()))
        self.mean, self.scale = everything.mean(0), everything.std(0) + 1e-9
        self.genres = list(real)
        self.centroids = np.stack([self._z(real[g]).mean(0) for g in self.genres])

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale

    def predict(self, x: np.ndarray) -> list[str]:
        d = ((self._z(x)[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return [self.genres[i] for i in d.argmin(1)]


def confusion(classifier: NearestCentroid, pieces: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Share of each genre's pieces the classifier names as each genre."""
    out = {}
    for g, x in pieces.items():
        named = classifier.predict(x) if len(x) else []
        out[g] = {h: (named.count(h) / len(named) if named else 0.0) for h in classifier.genres}
    return out


def held_out_accuracy(real: dict[str, np.ndarray]) -> dict[str, float]:
    """Fitted on alternate real excerpts, the share of the others named rightly, per genre."""
    fitted = NearestCentroid({g: x[::2] for g, x in real.items()})
    return {g: row[g] for g, row in confusion(fitted, {g: x[1::2] for g, x in real.items()}).items()}
