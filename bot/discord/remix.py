"""🎛 Remix on Discord: a form (a modal) to change a track's length, temperature or instrument,
then reroll it with those changes. The form opens as the press's answer (no database before it);
its submission is checked, deferred, and composed as 🔁 is (`bot.discord.delivery.start_job`)."""

from __future__ import annotations

import discord
from discord import ui

from bot.core import Derive, Remix
from bot.discord.buttons import NO_POSTING
from bot.discord.delivery import start_job
from bot.discord.talk import apologise, core_of, may_post_here, origin, say, tr
from bot.grammar import RANGES, UsageError, bounds, checked, instrument_of
from bot.i18n import ENGLISH, Translations


class RemixForm(ui.Modal):
    """Blank fields keep what the track had; the new track is the submitter's, at a new seed. The
    form speaks `t`'s language; what is typed into it stays the typed English words."""

    def __init__(self, track_id: int, t: Translations = ENGLISH) -> None:
        super().__init__(title=t.gettext("Remix #{track_id}").format(track_id=track_id), timeout=15 * 60)
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

    def remix(self) -> Remix:
        """The changes asked for, checked as the chat commands check them (UsageError otherwise)."""
        seconds, temperature, instrument = (f.value.strip() for f in (self.seconds, self.temperature, self.instrument))
        return Remix(
            seconds=checked(RANGES["seconds"], "seconds", seconds) if seconds else None,
            temperature=checked(RANGES["temperature"], "temperature", temperature) if temperature else None,
            instrument=instrument_of(instrument) if instrument else None,
        )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        if not may_post_here(interaction):  # the new track would be posted here, as if by them
            await say(interaction, tr(interaction).gettext(NO_POSTING))
            return
        try:
            remix = self.remix()
        except UsageError as exc:  # found without the database: answered at once
            await say(interaction, f"🤔 {exc.said(tr(interaction))}")
            return
        await interaction.response.defer(thinking=True)
        derive = Derive(origin(interaction), "reroll", self.track_id, remix)
        await start_job(interaction, await core_of(interaction).derive(derive))

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await apologise(interaction, error, f"remix of #{self.track_id}")
