"""🎛 Remix on Discord: a form (a modal) to change a track's length, temperature or instrument,
then reroll it with those changes. The form opens as the press's answer (no database before it);
its submission is checked, deferred, and composed as 🔁 is (`bot.discord.delivery.start_job`)."""

from __future__ import annotations

import discord
from discord import ui

from bot.core import Derive, Remix
from bot.discord.buttons import NO_POSTING
from bot.discord.delivery import start_job
from bot.discord.talk import apologise, core_of, may_post_here, origin, say
from bot.grammar import RANGES, UsageError, checked, instrument_of


class RemixForm(ui.Modal):
    """Blank fields keep what the track had; the new track is the submitter's, at a new seed."""

    seconds: ui.TextInput = ui.TextInput(
        label=f"Length in seconds ({RANGES['seconds'].bounds})",
        custom_id="seconds",
        required=False,
        max_length=6,
        placeholder="as before",
    )
    temperature: ui.TextInput = ui.TextInput(
        label=f"Temperature ({RANGES['temperature'].bounds})",
        custom_id="temperature",
        required=False,
        max_length=6,
        placeholder="as before",
    )
    instrument: ui.TextInput = ui.TextInput(
        label="Instrument",
        custom_id="instrument",
        required=False,
        max_length=40,
        placeholder="as before (organ, guitar, …)",
    )

    def __init__(self, track_id: int) -> None:
        super().__init__(title=f"Remix #{track_id}", timeout=15 * 60)
        self.track_id = track_id

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
            await say(interaction, NO_POSTING)
            return
        try:
            remix = self.remix()
        except UsageError as exc:  # found without the database: answered at once
            await say(interaction, f"🤔 {exc}")
            return
        await interaction.response.defer(thinking=True)
        derive = Derive(origin(interaction), "reroll", self.track_id, remix)
        await start_job(interaction, await core_of(interaction).derive(derive))

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await apologise(interaction, error, f"remix of #{self.track_id}")
