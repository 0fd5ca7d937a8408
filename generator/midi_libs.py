"""pretty_midi and pyfluidsynth, imported once without pyfluidsynth's line on stdout.

pyfluidsynth prints where it found libfluidsynth to stdout on import whenever `CI` is set, and
pretty_midi imports it. stdout is what the CLI answers with (paths, JSON), and stderr what a
one-line error is read from, so that line goes nowhere. Modules that need either library import
it from here.
"""

from __future__ import annotations

import contextlib
import io
from types import ModuleType

with contextlib.redirect_stdout(io.StringIO()):
    try:
        import fluidsynth as _fluidsynth
    except (ImportError, OSError):  # libfluidsynth missing: rendering says how to install it
        _fluidsynth = None
    import pretty_midi

fluidsynth: ModuleType | None = _fluidsynth

__all__ = ["fluidsynth", "pretty_midi"]
