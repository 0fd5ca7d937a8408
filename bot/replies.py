"""What the bot says, built once for every platform: captions, progress lines and buttons.

Adapters (Telegram, Discord) only translate a `Reply` into their own message and keyboard types.
Button data is short text, `<action>:<track id>`, so a button keeps working after a restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.grammar import RANGES
from generator.vocab import display_name

ACTIONS = {
    "reroll": "🔁 Reroll",
    "hotter": "🔥 Hotter",
    "cooler": "❄️ Cooler",
    "fav": "⭐ Favourite",
    "unfav": "★ Favourited",
    "continue": "➕ Continue",
    "share": "📤 Share",
}
TEMPERATURE_STEP = 0.1
# 🎹 under a track: the instruments it may be heard on again (its notes as they are, rendered anew)
RERENDER_INSTRUMENTS = ("piano", "electric piano", "organ", "vibraphone", "guitar", "harp", "strings", "pad")
BUTTON = re.compile(r"^(reroll|hotter|cooler|fav|unfav|continue|share):(\d{1,12})$")


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # action:track_id


@dataclass(frozen=True)
class TrackCard:
    """A stored track as a chat shows it; the keys are the artifact store's, read through the service."""

    track_id: int
    genre: str
    title: str  # Ambient #42
    stem: str  # ambient-42, for file names
    caption: str
    duration_s: float
    file_id: str | None = None  # this platform's copy of the audio, when it was uploaded before
    mp3_key: str | None = None
    midi_key: str | None = None
    png_key: str | None = None

    def buttons(self, favourite: bool = False) -> list[list[Button]]:
        return track_buttons(self.track_id, favourite)


# What a reply is, so each platform can mark it its own way (🤔, 🙅, ⏳ …); "" is a plain answer.
USAGE = "usage"  # the user typed or picked something we cannot do, or a track they may not see
REFUSED = "refused"  # the job backend said no (busy, quota)
LIMITED = "limited"  # over a rate limit
UNREADABLE = "unreadable"  # a file they sent cannot be used


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: list[list[Button]] = field(default_factory=list)
    ephemeral: bool = False  # only the asking user sees it (Discord), or a private answer
    kind: str = ""
    track: TrackCard | None = None

    @property
    def silent(self) -> bool:
        """Nothing to say: the same update or interaction came again, and the first is answered."""
        return not self.text


SILENT = Reply("")


@dataclass(frozen=True)
class Started:
    """A job was accepted; the platform now shows its progress and delivers it."""

    job_id: int


@dataclass(frozen=True)
class Listing:
    """A numbered page of the user's history or favourites: one line a track."""

    kind: str  # history, favorites
    page_no: int
    lines: list[str]
    more: bool = False


def listing_text(
    listing: Listing, empty: dict[str, str], code=lambda c: c, page_arg: str = "", footer: str | None = None
) -> str:
    """The page as a message; `code` marks a command the way the platform writes one and
    `page_arg` names the page option (Discord's `page:`)."""
    kind, n = listing.kind, listing.page_no
    if not listing.lines:
        return f"There is no page {n}; try {code(f'/{kind}')}" if n > 1 else empty[kind]
    title = "Your tracks" if kind == "history" else "Your favourites"
    lines = [f"{title} (page {n}):", *listing.lines]
    if listing.more:
        lines.append(f"More: {code(f'/{kind} {page_arg}{n + 1}')}")
    if footer:
        lines.append(footer)
    return "\n".join(lines)


def expired(track_id: int) -> str:
    return f"the audio of track #{track_id} has expired; /compose a new one"


def event_line(kind: str, done: int, total: int, eta_s: float | None, position: int | None, reason: str | None) -> str:
    """A job event's progress line, with the reason of a failure."""
    text = progress_line(kind, done, total, eta_s, position)
    if kind in ("failed", "cancelled") and reason and reason != "cancelled":
        text = f"{text}: {reason}"
    return text


@dataclass(frozen=True)
class ButtonPress:
    action: str
    track_id: int


def parse_button(data: str) -> ButtonPress | None:
    """Button data back into an action; None for anything we did not make (stale or forged)."""
    m = BUTTON.match(data or "")
    return ButtonPress(m.group(1), int(m.group(2))) if m else None


def caption(
    track_id: int,
    genre: str,
    seconds: float,
    seed: int,
    sampling: dict[str, Any],
    instrument: str,
    parent_id: int | None = None,
    lineage: str | None = None,
) -> str:
    """'Ambient #42 · 0:31 · piano' then the recipe, short enough for any platform's caption."""
    m, s = divmod(round(seconds), 60)
    lines = [f"{display_name(genre).capitalize()} #{track_id} · {m}:{s:02d} · {instrument}"]
    recipe = [f"seed {seed}", f"temp {sampling.get('temperature', 1.0):g}"]
    for key, label in (("top_k", "top-k"), ("top_p", "top-p"), ("at_least_k", "k"), ("rp_penalty", "rp")):
        if key in sampling:
            recipe.append(f"{label} {sampling[key]:g}")
    lines.append(" · ".join(recipe))
    if parent_id is not None:
        lines.append(f"{lineage or 'from'} of #{parent_id}")
    return "\n".join(lines)


FORGET_CONFIRM = (
    "🗑 Delete your settings, favourites and every track you composed, for good? "
    "(Tracks already posted in channels stay there.)"
)


def track_buttons(track_id: int, favourite: bool = False) -> list[list[Button]]:
    row1 = [Button(ACTIONS[a], f"{a}:{track_id}") for a in ("reroll", "hotter", "cooler")]
    fav = "unfav" if favourite else "fav"
    row2 = [Button(ACTIONS[a], f"{a}:{track_id}") for a in (fav, "continue", "share")]
    return [row1, row2]


def child_temperature(action: str, temperature: float) -> float:
    """Hotter and Cooler move by 0.1 within the grammar's temperature range; Reroll keeps it."""
    delta = {"hotter": TEMPERATURE_STEP, "cooler": -TEMPERATURE_STEP}.get(action, 0.0)
    limits = RANGES["temperature"]
    return round(min(max(temperature + delta, limits.low), limits.high), 2)


def progress_line(
    kind: str, done: int = 0, total: int = 0, eta_s: float | None = None, position: int | None = None
) -> str:
    """One line for the message the bot keeps editing while a track is composed."""
    if kind == "queued":
        return f"⏳ In the queue{f' (#{position})' if position else ''}…"
    if kind == "running":
        if not total:
            return "🎼 Composing…"
        pct = min(100, round(100 * done / total))
        bar = "▓" * (pct // 10) + "░" * (10 - pct // 10)
        eta = f" · ~{round(eta_s)} s left" if eta_s is not None else ""
        return f"🎼 Composing {bar} {pct}%{eta}"
    if kind == "rendering":
        return "🎹 Recording…"
    if kind == "done":
        return "✅ Done"
    if kind == "cancelled":
        return "✖️ Cancelled"
    return "⚠️ Something went wrong"
