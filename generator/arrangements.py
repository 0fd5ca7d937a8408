"""The arrangements a piece renders with, and each genre's own: kept apart from `generator.arrange`
(which needs pretty_midi) so that the chat grammar and the job API can name them cheaply."""

from __future__ import annotations

from . import vocab as V
from .errors import GeneratorError

ARRANGEMENTS = ("solo", "band")
# What each genre plays unless asked: classic stays a piano piece; the others sound finished with
# the band their listeners expect around the piano.
DEFAULT_ARRANGEMENT = {"classic": "solo", "jazz": "band", "calm": "band", "pop": "band"}


def check_arrangement(name: str) -> str:
    key = name.strip().lower()
    if key not in ARRANGEMENTS:
        raise GeneratorError(f"arrangement must be one of {', '.join(ARRANGEMENTS)}, got {name!r}")
    return key


def default_arrangement(genre: str) -> str:
    return DEFAULT_ARRANGEMENT.get(V.canonical_genre(genre), "solo")
