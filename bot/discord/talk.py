"""Discord's words for the service's types: who asks (in which language) and where, a `Reply` as a
private answer."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.core import CommandService, Origin, Where, Who, apology
from bot.i18n import Translations, language_of, translator
from bot.replies import LIMITED, REFUSED, UNREADABLE, USAGE, Reply

log = logging.getLogger(__name__)

PLATFORM = "discord"
MARKS = {USAGE: "🤔 ", REFUSED: "🙅 ", LIMITED: "⏳ ", UNREADABLE: "🙅 "}
EXPIRED_WEBHOOK = (10015, 50027)  # Unknown Webhook, Invalid Webhook Token: the interaction's token is gone


def core_of(interaction: discord.Interaction) -> CommandService:
    return interaction.client.core  # type: ignore[attr-defined]


def who(interaction: discord.Interaction) -> Who:
    """The user, answered in their Discord client's language."""
    return Who(PLATFORM, str(interaction.user.id), interaction.user.display_name, language_of(interaction.locale.value))


def tr(interaction: discord.Interaction) -> Translations:
    return translator(interaction.locale.value)


def here(interaction: discord.Interaction) -> Where:
    """The channel the interaction came from (a DM is a channel too): its members share a rate
    budget, and a job's result goes back to it."""
    channel_id = interaction.channel_id
    return Where(
        PLATFORM,
        str(channel_id or interaction.user.id),
        f"{PLATFORM}-channel:{channel_id}" if channel_id else None,
        None if channel_id is None else {"channel_id": channel_id, "guild_id": interaction.guild_id},
    )


def origin(interaction: discord.Interaction) -> Origin:
    return Origin(who(interaction), here(interaction), f"{PLATFORM}:{interaction.id}")


def text_of(reply: Reply) -> str:
    return MARKS.get(reply.kind, "") + reply.text


async def say(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer, whether or not the interaction was answered already."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def withdraw(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer after a public defer. Discord makes the first follow-up take the public
    "thinking…" placeholder's place, ignoring its ephemeral flag; so the placeholder is resolved
    and deleted first, and the answer then goes out as a private follow-up."""
    with contextlib.suppress(discord.HTTPException):  # gone already: the follow-up still reaches the user
        await interaction.edit_original_response(content="🤔")
        await interaction.delete_original_response()
    await interaction.followup.send(text, ephemeral=True)


def may_post_here(interaction: discord.Interaction) -> bool:
    """Whether the user may send messages where they pressed a button (in a DM, always: Discord
    resolves no permissions there). In a thread the right is "send messages in threads"."""
    if interaction.guild_id is None:
        return True
    allowed = interaction.permissions
    in_thread = isinstance(interaction.channel, discord.Thread)
    return bool(allowed.send_messages_in_threads if in_thread else allowed.send_messages)


def token_expired(exc: discord.HTTPException) -> bool:
    """Whether Discord refused a call on the interaction's webhook because its token is gone
    (15 minutes passed), so only the channel itself can still be reached."""
    return exc.status == 401 or exc.code in EXPIRED_WEBHOOK


async def apologise(interaction: discord.Interaction, error: BaseException, what: str) -> None:
    """One place for a failure of ours while handling an interaction: logged with its traceback, and
    the user is told privately, instead of Discord's "This interaction failed". A public "thinking…"
    placeholder is withdrawn first, so that the apology stays private."""
    log.error("%s failed", what, exc_info=error)
    sorry = tr(interaction).gettext(apology(error))
    with contextlib.suppress(discord.HTTPException):
        if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
            await withdraw(interaction, sorry)
        else:
            await say(interaction, sorry)


Callback = Callable[[Any, discord.Interaction], Awaitable[None]]


def guarded(callback: Callback) -> Callback:
    """For a button's or a select's callback: an exception is apologised for (`apologise`); discord.py
    would only log it, and the user would see "This interaction failed"."""

    @functools.wraps(callback)
    async def run(item: Any, interaction: discord.Interaction) -> None:
        try:
            await callback(item, interaction)
        except Exception as exc:
            await apologise(interaction, exc, f"component {getattr(item, 'custom_id', item)!r}")

    return run
