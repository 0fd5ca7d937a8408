"""Melomania: the console command and the settings every part reads."""

__version__ = "0.1.0"
