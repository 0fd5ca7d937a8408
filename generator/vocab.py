"""The published music-composer event vocabulary, in one place.

Ids 0–127 note-on(pitch), 128–255 note-off(pitch), 256–287 set-velocity(bin),
288–387 time-shift of (k+1)·10 ms, 388 end, 389 pad, 390–393 genre tokens.
"""

from __future__ import annotations

from .errors import UnknownGenreError

NOTE_ON = 0
NOTE_OFF = 128
VELOCITY = 256
TIME_SHIFT = 288
END = 388
PAD = 389
GENRE = 390
VOCAB_SIZE = 394

N_PITCHES = 128
N_VELOCITY_BINS = 32
N_TIME_SHIFTS = 100
TICK_SECONDS = 0.01  # one time-shift step
MAX_SHIFT_TICKS = N_TIME_SHIFTS  # a single shift token covers at most 1 s

PIANO_RANGE = (21, 96)  # inclusive, the range the reference keeps for generation
DEFAULT_VELOCITY = 100

# Canonical genre names in token order, and the names people type for them.
GENRES: tuple[str, ...] = ("classic", "jazz", "calm", "pop")
GENRE_ALIASES: dict[str, str] = {
    "classical": "classic",
    "ambient": "calm",
}
DISPLAY_NAMES: dict[str, str] = {"calm": "ambient"}


def canonical_genre(name: str) -> str:
    """Map a user-typed genre ('Ambient', 'classical') to its canonical name."""
    key = name.strip().lower()
    key = GENRE_ALIASES.get(key, key)
    if key not in GENRES:
        valid = ", ".join(display_name(g) for g in GENRES)
        raise UnknownGenreError(f"unknown genre {name!r}; choose one of: {valid}")
    return key


def display_name(genre: str) -> str:
    """The name people see: 'calm' is shown as 'ambient'. Never raises, for text output."""
    key = GENRE_ALIASES.get(genre.strip().lower(), genre.strip().lower())
    return DISPLAY_NAMES.get(key, key)


def genre_token(name: str) -> int:
    return GENRE + GENRES.index(canonical_genre(name))


def is_note_on(tok: int) -> bool:
    return NOTE_ON <= tok < NOTE_OFF


def is_note_off(tok: int) -> bool:
    return NOTE_OFF <= tok < VELOCITY


def is_velocity(tok: int) -> bool:
    return VELOCITY <= tok < TIME_SHIFT


def is_time_shift(tok: int) -> bool:
    return TIME_SHIFT <= tok < END


def velocity_to_bin(velocity: int) -> int:
    return velocity * N_VELOCITY_BINS // 128


def bin_to_velocity(bin_: int) -> int:
    return max(1, bin_ * 128 // N_VELOCITY_BINS)


def shift_ticks(tok: int) -> int:
    """Number of 10 ms ticks a time-shift token advances."""
    return tok - TIME_SHIFT + 1


def is_time_shift_tensor(tokens):
    """Elementwise is_time_shift for a tensor of ids."""
    return (tokens >= TIME_SHIFT) & (tokens < END)
