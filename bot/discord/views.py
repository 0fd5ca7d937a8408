"""What a track looks like on Discord: an embed of its caption, and a persistent view of
`DynamicItem` buttons that parse their state from the custom id, so they work after a restart."""

from __future__ import annotations

from typing import Any

import discord
from discord import ui

from bot.discord.talk import guarded, say, tr
from bot.i18n import ENGLISH, N_, Translations
from bot.replies import (
    ACTIONS,
    ARRANGE,
    BUTTON,
    KEEP,
    OUT_OF_DATE,
    RERENDER_INSTRUMENTS,
    ArrangePress,
    Button,
    ButtonPress,
    TrackCard,
    arrangement_button,
    keep_buttons,
    parse_arrangement,
    parse_button,
    parse_keep,
    track_buttons,
)

REMIX = N_("🎛 Remix")
HEAR_IT_ON = N_("🎹 Hear it on…")


class TrackButton(ui.DynamicItem[ui.Button], template=BUTTON):
    """🔁 🔥 ❄️ ⭐ ➕ 📤: the action and the track live in the custom id, so no state survives in memory.
    A press goes to the client's `on_track_button`. `label`: as shown (English by default: a press
    rebuilds the button from its custom id alone, and then its label is not shown)."""

    def __init__(self, press: ButtonPress, row: int | None = None, label: str | None = None) -> None:
        style = discord.ButtonStyle.primary if press.action in ("hotter", "cooler") else discord.ButtonStyle.secondary
        label = label or ACTIONS[press.action]
        super().__init__(ui.Button(label=label, custom_id=f"{press.action}:{press.track_id}", style=style, row=row))
        self.press = press

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> TrackButton:
        return cls(parse_button(match.group(0)))  # the template matched, so it parses

    @guarded
    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.on_track_button(interaction, self.press)  # type: ignore[attr-defined]


class RemixButton(ui.DynamicItem[ui.Button], template=r"^remix:(?P<track_id>[0-9]{1,12})$"):
    """🎛 Discord's own button under a track: a form to change its length, temperature or
    instrument, then reroll it. A press goes to the client's `on_remix`."""

    def __init__(self, track_id: int, row: int | None = None, t: Translations = ENGLISH) -> None:
        style = discord.ButtonStyle.secondary
        super().__init__(ui.Button(label=t.gettext(REMIX), custom_id=f"remix:{track_id}", style=style, row=row))
        self.track_id = track_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> RemixButton:
        return cls(int(match["track_id"]))

    @guarded
    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.on_remix(interaction, self.track_id)  # type: ignore[attr-defined]


class ArrangementButton(ui.DynamicItem[ui.Button], template=ARRANGE):
    """🎸 under a track: its notes again in the other arrangement (the genre's band, or the piano
    alone); the track and the arrangement asked for live in the custom id (`arrangement_button`).
    A press goes to the client's `on_arrangement`."""

    def __init__(self, button: Button, row: int | None = None) -> None:
        style = discord.ButtonStyle.secondary
        super().__init__(ui.Button(label=button.label, custom_id=button.data, style=style, row=row))
        self.press: ArrangePress = parse_arrangement(button.data)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> ArrangementButton:
        return cls(Button(item.label or "", match.group(0)))

    @guarded
    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.on_arrangement(interaction, self.press)  # type: ignore[attr-defined]


class KeepButton(ui.DynamicItem[ui.Button], template=KEEP):
    """Keep N under a group of candidates: the track lives in the custom id, so the pick works
    after a restart. A press goes to the client's `on_keep`."""

    def __init__(self, button: Button) -> None:
        super().__init__(ui.Button(label=button.label, custom_id=button.data, style=discord.ButtonStyle.primary))
        self.track_id = parse_keep(button.data).track_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> KeepButton:
        return cls(Button(item.label or "", match.group(0)))

    @guarded
    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.on_keep(interaction, self.track_id)  # type: ignore[attr-defined]


def candidates_view(track_ids: list[int], t: Translations = ENGLISH) -> ui.View:
    view = ui.View(timeout=None)
    for row in keep_buttons(track_ids, t=t):
        for button in row:
            view.add_item(KeepButton(button))
    return view


class InstrumentSelect(ui.DynamicItem[ui.Select], template=r"^instrument:(?P<track_id>[0-9]{1,12})$"):
    """🎹 under a track: a pick hears the same notes on that instrument, as a new track. The track
    lives in the custom id; a pick goes to the client's `on_instrument`."""

    def __init__(self, track_id: int, row: int | None = None, t: Translations = ENGLISH) -> None:
        options = [discord.SelectOption(label=name.capitalize(), value=name) for name in RERENDER_INSTRUMENTS]
        placeholder = t.gettext(HEAR_IT_ON)
        super().__init__(
            ui.Select(custom_id=f"instrument:{track_id}", placeholder=placeholder, options=options, row=row)
        )
        self.track_id = track_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> InstrumentSelect:
        return cls(int(match["track_id"]))

    @guarded
    async def callback(self, interaction: discord.Interaction) -> None:
        if len(self.item.values) != 1:  # Discord sends exactly one pick: this press is not from our select
            await say(interaction, tr(interaction).gettext(OUT_OF_DATE))
            return
        [instrument] = self.item.values
        await interaction.client.on_instrument(interaction, self.track_id, instrument)  # type: ignore[attr-defined]


def buttons_view(rows: list[list[Button]], t: Translations = ENGLISH, arrangement: str | None = None) -> ui.View:
    """The platform's buttons (labelled already), and Discord's own after them: 🎸 to the other
    arrangement at the end of the first row (when the track's `arrangement` is known), 🎛 Remix at
    the end of the last, and 🎹 instruments under them (a select fills a row of Discord's five)."""
    view = ui.View(timeout=None)
    for row, buttons in enumerate(rows):
        for b in buttons:
            view.add_item(TrackButton(parse_button(b.data), row=row, label=b.label))
    track_id = next((parse_button(b.data).track_id for row in rows for b in row), None)
    if track_id is not None:
        if arrangement is not None:
            view.add_item(ArrangementButton(arrangement_button(track_id, arrangement, t), row=0))
        view.add_item(RemixButton(track_id, row=len(rows) - 1, t=t))
        view.add_item(InstrumentSelect(track_id, row=len(rows), t=t))
    return view


def track_view(
    track_id: int, favourite: bool = False, t: Translations = ENGLISH, arrangement: str | None = None
) -> ui.View:
    return buttons_view(track_buttons(track_id, favourite, t), t, arrangement)


def track_embed(track: TrackCard, image: str | None = None) -> discord.Embed:
    """`image`: the file name of an attached picture (the piano roll) to show as the embed's image."""
    title, _, recipe = track.caption.partition("\n")
    embed = discord.Embed(title=title, description=recipe, colour=discord.Colour.blurple())
    if image is not None:
        embed.set_image(url=f"attachment://{image}")
    return embed
