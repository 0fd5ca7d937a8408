"""What the bot says, built once for every platform: captions, progress lines and buttons.

Adapters (Telegram, Discord) only translate a `Reply` into their own message and keyboard types.
Button data is short text, `<action>:<track id>`, so a button keeps working after a restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

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
class Reply:
    text: str
    buttons: list[list[Button]] = field(default_factory=list)
    ephemeral: bool = False  # only the asking user sees it (Discord), or a private answer


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


def child_temperature(action: str, temperature: float, low: float = 0.1, high: float = 2.0) -> float:
    """Hotter and Cooler move by 0.1 within the chat range; Reroll keeps the temperature."""
    delta = {"hotter": TEMPERATURE_STEP, "cooler": -TEMPERATURE_STEP}.get(action, 0.0)
    return round(min(max(temperature + delta, low), high), 2)


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
