"""A band's parts and how they are mixed into one multi-track MIDI file.

Mixing is done with the MIDI controllers every General MIDI synthesiser honours: channel volume
(CC 7), pan (CC 10), expression (CC 11, for a pad's swells), and the reverb and chorus sends (CC 91,
93). The piano stays in front: loudest, centred, with the least reverb.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..midi_libs import pretty_midi
from ..tokenizer import Note, notes_to_midi

VOLUME, PAN, EXPRESSION, REVERB, CHORUS = 7, 10, 11, 91, 93


@dataclass(frozen=True)
class Mix:
    """Where a part sits: levels 0-127 as the MIDI controllers take them; pan 64 is the centre."""

    volume: int = 100
    pan: int = 64
    reverb: int = 40
    chorus: int = 0


@dataclass(frozen=True)
class PartNote:
    """A note of an arranged part, in seconds (the piano's own notes stay on the tick grid)."""

    start: float
    end: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Part:
    name: str  # the MIDI track's name: "Bass", "Drums", "Pad" …
    program: int  # General MIDI program, 0-based; for drums the kit (0 standard, 40 brush)
    notes: tuple[PartNote, ...]
    mix: Mix = Mix()
    is_drum: bool = False
    # (seconds, value) points of CC 11: a pad's slow swells; empty leaves expression at full
    expression: tuple[tuple[float, int], ...] = field(default_factory=tuple)


PIANO_MIX = Mix(volume=112, pan=64, reverb=30)


def band_midi(
    piano: Sequence[Note], program: int, parts: Sequence[Part], piano_mix: Mix = PIANO_MIX
) -> pretty_midi.PrettyMIDI:
    """The piano (as `notes_to_midi` writes it, on `program`) and the band's parts, one named
    track each; drums on channel 10, which pretty_midi gives every drum instrument."""
    midi = notes_to_midi(piano, program=program)
    midi.instruments[0].name = "Piano"
    _set_mix(midi.instruments[0], piano_mix)
    for part in parts:
        inst = pretty_midi.Instrument(program=part.program, is_drum=part.is_drum, name=part.name)
        inst.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start, n.end) for n in part.notes if n.end > n.start >= 0]
        _set_mix(inst, part.mix)
        inst.control_changes += [pretty_midi.ControlChange(EXPRESSION, v, t) for t, v in part.expression]
        midi.instruments.append(inst)
    return midi


def _set_mix(inst: pretty_midi.Instrument, mix: Mix) -> None:
    inst.control_changes += [
        pretty_midi.ControlChange(number, value, 0.0)
        for number, value in ((VOLUME, mix.volume), (PAN, mix.pan), (REVERB, mix.reverb), (CHORUS, mix.chorus))
    ]
