"""Errors a caller of the generator can cause, one base type with a message a person can act on."""


class GeneratorError(ValueError):
    """Bad input to the generator: the message names what was wrong and the valid range."""


class UnknownGenreError(GeneratorError):
    pass


class PrimerError(GeneratorError):
    """A primer that cannot be used. `fault`: what is wrong with a MIDI file, as a key a front end
    can put in its user's language (`tokenizer.MIDI_FAULTS`), None for anything else."""

    def __init__(self, message: str, fault: str | None = None) -> None:
        super().__init__(message)
        self.fault = fault


class CheckpointError(GeneratorError):
    pass


class SamplingError(GeneratorError):
    pass
