"""Errors a caller of the generator can cause, one base type with a message a person can act on."""


class GeneratorError(ValueError):
    """Bad input to the generator: the message names what was wrong and the valid range."""


class UnknownGenreError(GeneratorError):
    pass


class PrimerError(GeneratorError):
    pass


class CheckpointError(GeneratorError):
    pass


class SamplingError(GeneratorError):
    pass
