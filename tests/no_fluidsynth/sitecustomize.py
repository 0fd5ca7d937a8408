"""Put on PYTHONPATH to make this interpreter behave as if libfluidsynth were not installed:
the system's library lookup finds no FluidSynth (the OS edge, not our code, is what is faked)."""

import ctypes.util

_find = ctypes.util.find_library


def find_library(name):
    return None if "fluidsynth" in name else _find(name)


ctypes.util.find_library = find_library
