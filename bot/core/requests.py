"""What a chat front end asks the command service: who asks, where, and the intent's own fields.

Every intent carries an `Origin`; its `key` is the update's or interaction's own id, so the same
one delivered twice starts one job. Platforms build these from their updates and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.grammar import Compose


@dataclass(frozen=True)
class Who:
    platform: str
    user_id: str
    name: str = ""
    locale: str = "en"  # the language they are answered in: `bot.i18n.language_of` their app's language code

    @property
    def limit_key(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class Where:
    """The chat or channel asked from (a DM is the user's own chat)."""

    platform: str
    chat_id: str
    limit_key: str | None = None  # the chat's shared rate budget (None: only the user's counts)
    reply_to: dict[str, Any] | None = None  # where a job's result goes, stored with the job

    @property
    def channel(self) -> tuple[str, str]:
        """As storage names a chat."""
        return (self.platform, self.chat_id)


@dataclass(frozen=True)
class Origin:
    who: Who
    where: Where
    key: str = ""  # idempotency: one job per update or interaction


@dataclass(frozen=True)
class ComposeTrack:
    origin: Origin
    spec: Compose


@dataclass(frozen=True)
class TrackAsk:
    """/continue 42 and ➕, 📤 and /share: an intent about one track the user may read here."""

    origin: Origin
    track_id: int


@dataclass(frozen=True)
class Remix:
    """What to change in a track's recipe before deriving from it (Discord's remix form); None: as
    the track had it."""

    seconds: float | None = None
    temperature: float | None = None
    instrument: str | None = None


@dataclass(frozen=True)
class Derive:
    """🔁 reroll, 🔥 hotter, ❄️ cooler: the track's recipe again, at a new seed or temperature
    (and with `remix`'s changes, when given)."""

    origin: Origin
    action: str
    track_id: int
    remix: Remix | None = None


@dataclass(frozen=True)
class Rerender:
    """🎹 / 🎸: the same notes of a track the user may read here, on another instrument (its name as
    picked or typed: the service checks it) or in another arrangement (solo, band); None: as the
    track had it."""

    origin: Origin
    track_id: int
    instrument: str | None = None
    arrangement: str | None = None


@dataclass(frozen=True)
class ContinueMidi:
    origin: Origin
    genre: str | None  # None: the user's default
    primer_ref: str  # where the file came from, stored with the job


@dataclass(frozen=True)
class SetFavourite:
    origin: Origin
    track_id: int
    favourite: bool | None  # None: turn it over (a shared chat's button shows no state)


@dataclass(frozen=True)
class PageAsk:
    origin: Origin
    kind: str  # history, favorites
    page_no: int = 1
    size: int = 10


@dataclass(frozen=True)
class SettingsAsk:
    origin: Origin
    values: dict[str, Any] = field(default_factory=dict)  # empty: only show them
