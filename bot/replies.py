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
    """Jobs were accepted; the platform now shows their progress and delivers them: one track, or
    a group of candidates (/compose count=3) shown together for the user to keep one."""

    job_ids: tuple[int, ...]

    @property
    def job_id(self) -> int:
        return self.job_ids[0]

    @property
    def candidates(self) -> bool:
        return len(self.job_ids) > 1


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


# --- several candidates at once (/compose count=3): the user keeps one -----------------------------

KEEP = re.compile(r"^keep:(\d{1,12})(?::(\d{1,12}))?$")
PICK_ONE = "👆 Pick one to keep (the others stay in your /history)"
ONLY_THE_ASKER = "only the person who asked for these can pick one"


@dataclass(frozen=True)
class KeepPress:
    track_id: int
    message_id: int | None  # where the candidate is shown (Telegram: its message in the album)


def keep_buttons(track_ids: list[int], message_ids: list[int] | None = None) -> list[list[Button]]:
    """Keep 1 … Keep N under a group of candidates, in one row. `message_ids`: each candidate's own
    message, carried so that the pick can remove them all (the buttons are the only record)."""
    ids = message_ids or [None] * len(track_ids)
    return [
        [
            Button(f"Keep {n}", f"keep:{track_id}" + (f":{message_id}" if message_id is not None else ""))
            for n, (track_id, message_id) in enumerate(zip(track_ids, ids), 1)
        ]
    ]


def parse_keep(data: str) -> KeepPress | None:
    """A Keep button's data back; None for anything we did not make."""
    m = KEEP.match(data or "")
    return KeepPress(int(m.group(1)), int(m.group(2)) if m.group(2) else None) if m else None


def candidate_line(n: int, track: TrackCard) -> str:
    """A candidate as its group shows it: the number its Keep button has, its title and length."""
    m, s = divmod(round(track.duration_s), 60)
    return f"{n} · {track.title} · {m}:{s:02d}"


def candidates_progress(
    kind: str, count: int, ready: int, done: int, total: int, eta_s: float | None, position: int | None
) -> str:
    """The one progress line of a group of candidates, all of them together."""
    line = progress_line(kind, done, total, eta_s, position)
    return f"{line} ({count} candidates)" if kind == "queued" else f"{line} · {ready} of {count} ready"


def candidates_missing(count: int, endings: list[str]) -> str:
    """How the candidates that did not come ended (each ending's progress line)."""
    return f"{len(endings)} of {count} candidates did not come: " + "; ".join(endings)
