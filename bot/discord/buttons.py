"""A press of 🔁 🔥 ❄️ ⭐ ➕ 📤 🎸 under a track on Discord, a pick of 🎹's instruments, or Keep N
under candidates."""

from __future__ import annotations

import discord

from bot.core import Derive, Rerender, SetFavourite, TrackAsk, Unavailable
from bot.discord.commands import share_view
from bot.discord.delivery import DEFAULT_FILESIZE_LIMIT, piano_roll, start_job, track_files
from bot.discord.talk import core_of, may_post_here, origin, say, text_of, tr, withdraw
from bot.discord.views import buttons_view, track_embed, track_view
from bot.i18n import N_
from bot.replies import ButtonPress, Reply

NO_POSTING = N_(
    "🙅 You can't send messages in this channel, so I won't post a track here for you; "
    "use /compose in a channel where you can post, or in a DM with me."
)


async def on_button(interaction: discord.Interaction, press: ButtonPress) -> None:
    """What needs no database (the presser's right to post here) is answered at once; otherwise the
    press is deferred first, as Discord wants within 3 seconds: publicly for a new track, privately
    for an answer only the presser sees (in a DM, ⭐ updates the message itself)."""
    core, asked, t = core_of(interaction), origin(interaction), tr(interaction)
    composes = press.action in ("reroll", "hotter", "cooler", "continue")
    if composes and not may_post_here(interaction):  # the new track would be posted here, as if by them
        await say(interaction, t.gettext(NO_POSTING))
        return
    dm = interaction.guild_id is None
    if composes:
        await interaction.response.defer(thinking=True)
    elif press.action in ("fav", "unfav") and dm:
        await interaction.response.defer()  # the buttons show the state: the message is updated
    else:
        await interaction.response.defer(ephemeral=True, thinking=True)
    track = await core.track(TrackAsk(asked, press.track_id))
    if isinstance(track, Reply):
        await (withdraw if composes else say)(interaction, text_of(track))
    elif press.action == "share":
        text = t.gettext("📤 Where should I post #{track_id}? (or `/share track:{track_id} channel:#…`)")
        await interaction.followup.send(
            text.format(track_id=track.track_id), view=share_view(track.track_id, t), ephemeral=True
        )
    elif press.action in ("fav", "unfav"):  # in a server the buttons are everyone's and show no state
        await toggle_favourite(interaction, track.track_id, press.action == "fav" if dm else None)
    elif press.action == "continue":
        await start_job(interaction, await core.continue_track(TrackAsk(asked, track.track_id)))
    else:
        await start_job(interaction, await core.derive(Derive(asked, press.action, track.track_id)))


async def toggle_favourite(interaction: discord.Interaction, track_id: int, favourite: bool | None) -> None:
    """`favourite` None: turn the presser's favourite over (a server's button shows no state)."""
    reply = await core_of(interaction).favourite(SetFavourite(origin(interaction), track_id, favourite))
    if interaction.guild_id is None and not reply.kind:  # in a DM the buttons are only the user's: show the state
        arranged = reply.track.arrangement if reply.track is not None else None
        await interaction.edit_original_response(view=buttons_view(reply.buttons, tr(interaction), arranged))
    await say(interaction, text_of(reply))


async def on_rerender(
    interaction: discord.Interaction, track_id: int, instrument: str | None = None, arrangement: str | None = None
) -> None:
    """🎹 / 🎸: the track's notes on the instrument picked or in the other arrangement, a new track
    posted here as 🔁's is (so only for those who may post here; deferred publicly first)."""
    if not may_post_here(interaction):
        await say(interaction, tr(interaction).gettext(NO_POSTING))
        return
    await interaction.response.defer(thinking=True)
    rerender = Rerender(origin(interaction), track_id, instrument, arrangement)
    await start_job(interaction, await core_of(interaction).rerender(rerender))


async def on_keep(interaction: discord.Interaction, track_id: int) -> None:
    """Keep N under candidates, taken only from the person who asked for them: deferred first (an
    update of the message), then the candidates message becomes the kept track's usual one (its
    MP3, MIDI and piano roll, its buttons). Every candidate stays in the asker's history."""
    await interaction.response.defer()
    track, t = await core_of(interaction).pick(TrackAsk(origin(interaction), track_id)), tr(interaction)
    if isinstance(track, Reply):
        await say(interaction, text_of(track))
        return
    try:
        files = await track_files(interaction.client, track, interaction.filesize_limit or DEFAULT_FILESIZE_LIMIT)
    except Unavailable as exc:
        await say(interaction, f"⚠️ {exc.said(t)}")
        return
    embed, view = track_embed(track, image=piano_roll(files)), track_view(track_id, t=t, arrangement=track.arrangement)
    await interaction.edit_original_response(content=None, attachments=files, embed=embed, view=view)
