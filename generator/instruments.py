"""Friendly instrument names → General MIDI programs (0-based), for rendering."""

from __future__ import annotations

from .errors import GeneratorError

INSTRUMENTS: dict[str, int] = {
    "piano": 0,
    "bright piano": 1,
    "electric piano": 4,
    "harpsichord": 6,
    "celesta": 8,
    "music box": 10,
    "vibraphone": 11,
    "marimba": 12,
    "organ": 19,
    "accordion": 21,
    "guitar": 24,
    "steel guitar": 25,
    "jazz guitar": 26,
    "strings": 48,
    "choir": 52,
    "harp": 46,
    "flute": 73,
    "pad": 88,
    "warm pad": 89,
    "synth": 80,
}
ALIASES = {"epiano": "electric piano", "rhodes": "electric piano", "vibes": "vibraphone", "keys": "piano"}


def instrument_program(name: str) -> int:
    key = " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
    key = ALIASES.get(key, key)
    if key not in INSTRUMENTS:
        raise GeneratorError(f"unknown instrument {name!r}; choose one of: {', '.join(INSTRUMENTS)}")
    return INSTRUMENTS[key]
