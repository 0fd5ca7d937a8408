"""🎛 Remix on Discord: a form (a modal) to change a track's length, temperature or instrument,
then reroll it with those changes. The form opens as the press's answer (no database before it);
its submission is checked, deferred, and composed as 🔁 is (`bot.discord.delivery.start_job`).

The form keeps nothing in memory: its custom id names the track, and the submission is answered
from that id and the typed fields alone (`on_form`, from the client's `on_interaction`), so a
form opened before a restart, or left open for an hour, is still answered."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import discord
from discord import ui

from bot.core import Derive, Remix
from bot.discord.buttons import NO_POSTING
from bot.discord.delivery import start_job
from bot.discord.talk import apologise, core_of, may_post_here, origin, say, tr
from bot.grammar import RANGES, UsageError, bounds, checked, instrument_of
from bot.i18n import ENGLISH, Translations

FORM = re.compile(r"remix-form:(\d{1,19})")
FIELDS = ("seconds", "temperature", "instrument")


class RemixForm(ui.Modal):
    """Blank fields keep what the track had; the new track is the submitter's, at a new seed. The
    form speaks `t`'s language; what is typed into it stays the typed English words. Only its
    look lives here: the submission is `on_form`'s."""

    def __init__(self, track_id: int, t: Translations = ENGLISH) -> None:
        super().__init__(
            title=t.gettext("Remix #{track_id}").format(track_id=track_id),
            custom_id=f"remix-form:{track_id}",
            timeout=None,
        )
        self.track_id = track_id
        as_before = t.gettext("as before")
        self.seconds = self.field("seconds", t.gettext("Length in seconds ({bounds})"), as_before, 6, t)
        self.temperature = self.field("temperature", t.gettext("Temperature ({bounds})"), as_before, 6, t)
        self.instrument = self.field(
            "instrument", t.gettext("Instrument"), t.gettext("as before (organ, guitar, …)"), 40, t
        )

    def field(self, name: str, label: str, placeholder: str, most: int, t: Translations) -> ui.TextInput:
        """One optional field; a label with {bounds} names its range."""
        if name in RANGES:
            label = label.format(bounds=bounds(RANGES[name]).said(t))
        item = ui.TextInput(label=label, custom_id=name, required=False, max_length=most, placeholder=placeholder)
        self.add_item(item)
        return item


def remix_of(values: Mapping[str, str]) -> Remix:
    """The changes a submitted form asks for, checked as the chat commands check them (UsageError
    otherwise); a blank or missing field keeps what the track had."""
    seconds, temperature, instrument = (str(values.get(name) or "").strip() for name in FIELDS)
    return Remix(
        seconds=checked(RANGES["seconds"], "seconds", seconds) if seconds else None,
        temperature=checked(RANGES["temperature"], "temperature", temperature) if temperature else None,
        instrument=instrument_of(instrument) if instrument else None,
    )


def typed_values(data: Mapping[str, Any] | None) -> dict[str, str]:
    """What was typed into a submitted form, by field id: text inputs sit in action rows (or,
    in Discord's newer layout, in labels); anything else in the payload is ignored."""
    values: dict[str, str] = {}

    def walk(node: object) -> None:
        if isinstance(node, Mapping):
            if node.get("type") == 4 and isinstance(node.get("custom_id"), str):
                values[node["custom_id"]] = str(node.get("value") or "")
            for key in ("components", "component"):
                walk(node.get(key))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk((data or {}).get("components"))
    return values


def form_track(custom_id: object) -> int | None:
    """The track a form's custom id names (None: not a remix form of ours)."""
    match = FORM.fullmatch(custom_id) if isinstance(custom_id, str) else None
    return int(match.group(1)) if match else None


async def on_form(interaction: discord.Interaction, track_id: int) -> None:
    """A submitted remix form: checked, deferred, and composed as 🔁 is."""
    try:
        if not may_post_here(interaction):  # the new track would be posted here, as if by them
            await say(interaction, tr(interaction).gettext(NO_POSTING))
            return
        try:
            remix = remix_of(typed_values(interaction.data))
        except UsageError as exc:  # found without the database: answered at once
            await say(interaction, f"🤔 {exc.said(tr(interaction))}")
            return
        await interaction.response.defer(thinking=True)
        derive = Derive(origin(interaction), "reroll", track_id, remix)
        await start_job(interaction, await core_of(interaction).derive(derive))
    except Exception as error:
        await apologise(interaction, error, f"remix of #{track_id}")
