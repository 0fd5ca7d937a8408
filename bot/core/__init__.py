"""The platform-neutral command service every chat front end calls (see `bot.core.service`), and
the types a front end needs from it. Telegram and Discord only translate."""

from jobs.api import MAX_PRIMER_BYTES, JobBackend
from storage import ArtifactStore, Database

from .delivery import Followers, Pending, Unavailable, progress_of, watch, watch_group
from .requests import (
    ComposeTrack,
    ContinueMidi,
    Derive,
    Origin,
    PageAsk,
    Remix,
    Rerender,
    SetFavourite,
    SettingsAsk,
    TrackAsk,
    Where,
    Who,
)
from .service import CommandService, apology

__all__ = [
    "MAX_PRIMER_BYTES",
    "ArtifactStore",
    "CommandService",
    "ComposeTrack",
    "ContinueMidi",
    "Database",
    "Derive",
    "Followers",
    "JobBackend",
    "Origin",
    "PageAsk",
    "Pending",
    "Remix",
    "Rerender",
    "SetFavourite",
    "SettingsAsk",
    "TrackAsk",
    "Unavailable",
    "Where",
    "Who",
    "apology",
    "progress_of",
    "watch",
    "watch_group",
]
