"""Discord's other slash commands: pages of tracks, sharing, settings, cancelling, forgetting,
help. Each becomes an intent for the command service and its reply a private answer."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands, ui
from discord.app_commands import Choice, Range

from bot.core import PageAsk, SettingsAsk, TrackAsk, Unavailable, Where
from bot.discord.compose import (
    GENRE_CHOICES,
    Seconds,
    Temperature,
    TrackId,
    checked,
    compose,
    continue_command,
    instrument_choices,
)
from bot.discord.delivery import DEFAULT_FILESIZE_LIMIT, piano_roll, track_files
from bot.discord.talk import PLATFORM, core_of, guarded, origin, say, text_of, tr, who
from bot.discord.views import track_embed, track_view
from bot.grammar import GENRE_NAMES, UsageError, genre_of, instrument_of
from bot.i18n import ENGLISH, N_, Translations, reason
from bot.replies import FORGET_CONFIRM, FORGET_DELETE, FORGET_KEEP, FORGET_KEPT, OUT_OF_DATE, Reply, listing_text

PAGE_SIZE = 10
PageNumber = Range[int, 1, 1000]
POSTABLE_CHANNELS = (
    discord.ChannelType.text,
    discord.ChannelType.news,
    discord.ChannelType.voice,
    discord.ChannelType.public_thread,
    discord.ChannelType.private_thread,
    discord.ChannelType.news_thread,
)
EMPTY = {"history": N_("No tracks yet: try `/compose`"), "favorites": N_("No favourites yet")}
HELP = N_(
    "🎹 I compose piano music.\n\n"
    "`/compose genre:ambient` — a track (genres: {genres}); options: temperature, seconds, seed, top_k, "
    "top_p, at_least_k, rp_penalty, rp_restore_speed, instrument; "
    "`count:3` composes three to keep the one you like; "
    "`arrangement:band` adds the genre's band (bass, drums, pads), `arrangement:solo` keeps the piano alone\n"
    "Under each track: 🔁 reroll, 🔥 hotter, ❄️ cooler, ⭐ favourite, ➕ continue, 📤 share, 🎛 remix, "
    "🎸 the same notes with or without the band, 🎹 the same notes on another instrument — "
    "anyone in the channel may reroll a posted track; "
    "the new one is theirs.\n\n"
    "`/continue track:42` — more of a track · `/continue midi:<your .mid file> genre:jazz` — more of your own piece\n"
    "`/history` · `/favorites` · `/share track:42 channel:#music`\n"
    "`/genres` — what I can play · `/settings` — your defaults · `/cancel` — stop your current track\n"
    "`/forgetme` — delete everything I keep about you"
)
GENRES_TEXT = N_(
    "Genres: {genres}.\nFor example: `/compose genre:ambient` or `/compose genre:jazz temperature:0.9 seconds:60`"
)


async def think_privately(interaction: discord.Interaction) -> None:
    """The first await of a command that reads or writes the database: Discord's 3 seconds are met
    whatever the database does, and the answer follows privately."""
    await interaction.response.defer(ephemeral=True, thinking=True)


async def list_tracks(interaction: discord.Interaction, kind: str, page_no: int) -> None:
    await think_privately(interaction)
    listing = await core_of(interaction).page(PageAsk(origin(interaction), kind, page_no, PAGE_SIZE))
    text = listing_text(listing, EMPTY, code=lambda c: f"`{c}`", page_arg="page:", t=tr(interaction))
    await say(interaction, text)


@app_commands.command(name="history", description=N_("Your tracks, newest first"))
async def history_command(interaction: discord.Interaction, page: PageNumber = 1) -> None:
    await list_tracks(interaction, "history", page)


@app_commands.command(description=N_("Your favourite tracks"))
async def favorites(interaction: discord.Interaction, page: PageNumber = 1) -> None:
    await list_tracks(interaction, "favorites", page)


@app_commands.command(description=N_("Post a track into a channel"))
@app_commands.describe(track=N_("the track number"), channel=N_("where to post it"))
async def share(interaction: discord.Interaction, track: TrackId, channel: app_commands.AppCommandChannel) -> None:
    await think_privately(interaction)
    await share_track(interaction, track, channel)


Channel = app_commands.AppCommandChannel | app_commands.AppCommandThread


async def share_track(interaction: discord.Interaction, track_id: int, channel: Channel) -> None:
    """/share and 📤's channel picker, once deferred: the track is posted into `channel` if the
    sharer may read it and post files there (as Discord resolved their permissions), and if the bot
    may post there too; recorded as shared there. Every answer is private."""
    core, t = core_of(interaction), tr(interaction)
    ask = TrackAsk(origin(interaction), track_id)
    found = await core.track(ask)
    if isinstance(found, Reply):
        await say(interaction, text_of(found))
        return
    if channel.type not in POSTABLE_CHANNELS:
        text = t.gettext("🙅 I can only post into text channels, not {channel}.")
        await say(interaction, text.format(channel=channel.mention))
        return
    allowed = channel.permissions  # the sharer's own permissions there, as Discord resolved them
    if not (allowed.view_channel and allowed.send_messages and allowed.attach_files):
        text = t.gettext("🙅 You can't post files in {channel}, so I won't share into it for you.")
        await say(interaction, text.format(channel=channel.mention))
        return
    target = interaction.client.get_partial_messageable(channel.id, guild_id=channel.guild_id)
    try:
        files = await track_files(interaction.client, found, interaction.filesize_limit or DEFAULT_FILESIZE_LIMIT)
        embed = track_embed(found, image=piano_roll(files))
        sent = await target.send(
            embed=embed, files=files, view=track_view(found.track_id, t=t, arrangement=found.arrangement)
        )
    except discord.Forbidden:
        text = t.gettext("🙅 I'm not allowed to post in {channel}; ask an admin to let me in.")
        await say(interaction, text.format(channel=channel.mention))
        return
    except (discord.HTTPException, Unavailable) as exc:
        text = t.gettext("🙅 I couldn't post into {channel}: {reason}")
        await say(interaction, text.format(channel=channel.mention, reason=reason(exc, t)))
        return
    await core.shared(ask, Where(PLATFORM, str(channel.id)), sent.id)
    text = t.gettext("📤 Shared #{track_id} into {channel}.")
    await say(interaction, text.format(track_id=found.track_id, channel=channel.mention))


class ShareSelect(ui.DynamicItem[ui.ChannelSelect], template=r"^share-to:(?P<track_id>[0-9]{1,12})$"):
    """📤's channel picker: the track lives in the custom id, so it works after a restart; choosing a
    channel shares the track there as /share does, with the same checks."""

    def __init__(self, track_id: int, t: Translations = ENGLISH) -> None:
        super().__init__(
            ui.ChannelSelect(
                custom_id=f"share-to:{track_id}",
                channel_types=list(POSTABLE_CHANNELS),
                placeholder=t.gettext("Share #{track_id} into…").format(track_id=track_id),
            )
        )
        self.track_id = track_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> ShareSelect:
        return cls(int(match["track_id"]))

    @guarded
    async def callback(self, interaction: discord.Interaction) -> None:
        if len(self.item.values) != 1:  # the select takes one channel: this press is not from it
            await say(interaction, tr(interaction).gettext(OUT_OF_DATE))
            return
        await think_privately(interaction)
        [channel] = self.item.values
        await share_track(interaction, self.track_id, channel)


def share_view(track_id: int, t: Translations = ENGLISH) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(ShareSelect(track_id, t))
    return view


@app_commands.command(description=N_("Your defaults for /compose"))
@app_commands.describe(genre=N_("default genre"), temperature=N_("default temperature"), seconds=N_("default length"))
@app_commands.choices(genre=GENRE_CHOICES)
@app_commands.autocomplete(instrument=instrument_choices)
async def settings(
    interaction: discord.Interaction,
    genre: Choice[str] | None = None,
    temperature: Temperature | None = None,
    seconds: Seconds | None = None,
    instrument: str | None = None,
) -> None:
    try:
        values: dict[str, Any] = {}
        if genre is not None:
            values["genre"] = genre_of(genre.value)
        if temperature is not None:
            values["temperature"] = checked("temperature", temperature)
        if seconds is not None:
            values["seconds"] = round(checked("seconds", seconds))
        if instrument is not None:
            values["instrument"] = instrument_of(instrument)
    except UsageError as exc:
        await say(interaction, f"🤔 {exc.said(tr(interaction))}")
        return
    await think_privately(interaction)
    await say(interaction, (await core_of(interaction).settings(SettingsAsk(origin(interaction), values))).text)


@app_commands.command(description=N_("Stop the track being composed for you"))
async def cancel(interaction: discord.Interaction) -> None:
    await think_privately(interaction)
    await say(interaction, (await core_of(interaction).cancel(who(interaction))).text)


class ForgetButton(ui.DynamicItem[ui.Button], template=r"^forgetme:(?P<choice>confirm|keep)$"):
    """The two answers under /forgetme's question. The choice lives in the custom id and what is
    deleted is always the presser's own data, so the question needs no state and survives a restart."""

    def __init__(self, choice: str, t: Translations = ENGLISH) -> None:
        confirm = choice == "confirm"
        super().__init__(
            ui.Button(
                label=t.gettext(FORGET_DELETE if confirm else FORGET_KEEP),
                style=discord.ButtonStyle.danger if confirm else discord.ButtonStyle.secondary,
                custom_id=f"forgetme:{choice}",
            )
        )
        self.choice = choice

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: Any, /) -> ForgetButton:
        return cls(match["choice"])

    @guarded
    async def callback(self, interaction: discord.Interaction) -> None:
        if self.choice == "confirm":
            await forget(interaction)
        else:
            await interaction.response.edit_message(content=tr(interaction).gettext(FORGET_KEPT), view=None)


async def forget(interaction: discord.Interaction) -> None:
    """As Telegram's /forgetme: the user's unfinished jobs are cancelled, then everything of theirs
    is deleted. Deferred first: deleting files may take a while."""
    await interaction.response.defer()
    done = await core_of(interaction).forget(who(interaction))
    await interaction.edit_original_response(content=done.text, view=None)


@app_commands.command(name="forgetme", description=N_("Delete everything I keep about you"))
async def forget_me(interaction: discord.Interaction) -> None:
    """Asks first, privately: nothing is deleted until the user presses the button."""
    t = tr(interaction)
    view = ui.View(timeout=None)
    view.add_item(ForgetButton("confirm", t))
    view.add_item(ForgetButton("keep", t))
    await interaction.response.send_message(t.gettext(FORGET_CONFIRM), view=view, ephemeral=True)


@app_commands.command(description=N_("The genres I can compose in"))
async def genres(interaction: discord.Interaction) -> None:
    await say(interaction, tr(interaction).gettext(GENRES_TEXT).format(genres=GENRE_NAMES))


@app_commands.command(name="help", description=N_("How to talk to me"))
async def help_command(interaction: discord.Interaction) -> None:
    await say(interaction, tr(interaction).gettext(HELP).format(genres=GENRE_NAMES))


COMMANDS = (
    compose,
    continue_command,
    history_command,
    favorites,
    share,
    settings,
    cancel,
    genres,
    forget_me,
    help_command,
)
