"""Admission: a request checked once, before anything is stored, by whichever backend takes it.

Both job backends call `admit`; what it returns is stored as is and composed as stored, never
validated or re-derived again (a runner only adds its model's presets).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from generator.params import GenerationRequest, SamplingParams, draw_seed

from .api import ComposeRequest

BUSY = "I'm busy composing for lots of people right now; try again in a minute"


def admit(
    request: ComposeRequest, presets: Mapping[str, SamplingParams] | None = None, controls: bool = True
) -> tuple[ComposeRequest, GenerationRequest]:
    """The request with its seed drawn (if it had none), its arrangement settled, and its overrides checked against the
    ranges people may ask for, and the generator request it makes with these `presets`.
    Raises generator.GeneratorError with words for the user. `controls`: whether the model
    follows attribute controls (a Redis-mode bot, which has no model, admits them)."""
    request.sampling.validated()
    if request.seed is None:
        request = replace(request, seed=draw_seed())
    request = replace(request, arrangement=request.arranged)  # stored as chosen, should defaults change
    return request, request.generation_request(presets, controls)


def over_quota(mine: int, asked: int, most: int) -> str | None:
    """Why a user with `mine` jobs on the way may not add `asked` more (at most `most` at once),
    in words for them; None when they may. Several asked at once (candidates) go in together or
    not at all."""
    if mine + asked <= most:
        return None
    if asked == 1:
        return f"you already have {mine} tracks on the way; wait for one to finish (or /cancel)"
    have = f" and already have {mine}" if mine else ""
    return f"that's {asked} tracks at once, but you may have {most} on the way{have}; ask for fewer, or wait"
