"""The Discord front end (discord.py 2.x), wired: a gateway client with the command tree and the
track buttons, the command service (`bot.core`) as `client.core`.

Every interaction is answered within Discord's 3 seconds: what needs no database (option ranges,
the right to post here) is checked and answered at once; anything else defers first, then answers
privately or follows the job in a background task that edits the original response with progress
and finally into the track itself (`bot.discord.delivery`). A failure of ours is apologised for
privately (`bot.discord.talk.apologise`).

    client = build_client(runner, db, store, test_guild_id=1234)
    await client.start(token)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import discord
from discord import app_commands

from bot.core import ArtifactStore, CommandService, Database, JobBackend
from bot.discord.buttons import on_button, on_keep, on_rerender
from bot.discord.commands import COMMANDS, ForgetButton, ShareSelect
from bot.discord.delivery import Delivery, follow_job
from bot.discord.remix import RemixForm, form_track, on_form
from bot.discord.talk import PLATFORM, apologise, say, tr
from bot.discord.translator import CommandTranslator
from bot.discord.views import ArrangementButton, InstrumentSelect, KeepButton, RemixButton, TrackButton
from bot.limits import Limits
from bot.replies import OUT_OF_DATE, ArrangePress, ButtonPress

log = logging.getLogger(__name__)
# Every button and select of ours: each parses its state from its custom id (`DynamicItem`)
DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem], ...] = (
    TrackButton,
    ForgetButton,
    ShareSelect,
    RemixButton,
    InstrumentSelect,
    KeepButton,
    ArrangementButton,
)


def template_of(item: type[discord.ui.DynamicItem]) -> re.Pattern[str]:
    """The custom ids a DynamicItem class takes (discord.py keeps the class's template compiled
    here; `DynamicItem.template` reads it only from an instance)."""
    return item.__discord_ui_compiled_template__


def claimed(custom_id: object) -> bool:
    """Whether a component's custom id is one of ours (some DynamicItem's template matches it)."""
    return isinstance(custom_id, str) and any(template_of(item).fullmatch(custom_id) for item in DYNAMIC_ITEMS)


def http_detail(exc: BaseException) -> str:
    return f"{exc.status} {exc.text}" if isinstance(exc, discord.HTTPException) else exc.__class__.__name__


class MelomaniaClient(discord.Client):
    """A gateway client with the command tree and the track buttons; it needs no privileged intents
    (only `guilds`, which discord.py's interaction state relies on)."""

    def __init__(
        self, core: CommandService, test_guild_id: int | None = None, limits: Limits | None = None, **options: Any
    ) -> None:
        super().__init__(intents=discord.Intents(guilds=True), **options)
        self.core = core
        if limits is not None:
            self.core.limits = limits
        self.core.followers.describe = http_detail
        self.test_guild = discord.Object(test_guild_id) if test_guild_id else None
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self.on_app_command_error
        for command in COMMANDS:
            self.tree.add_command(command)
        self._resumed = False

    @property
    def limits(self) -> Limits:
        """How fast each user and channel may compose (the service's, in memory)."""
        return self.core.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.core.limits = limits

    async def on_track_button(self, interaction: discord.Interaction, press: ButtonPress) -> None:
        await on_button(interaction, press)

    async def on_instrument(self, interaction: discord.Interaction, track_id: int, instrument: str) -> None:
        await on_rerender(interaction, track_id, instrument=instrument)

    async def on_arrangement(self, interaction: discord.Interaction, press: ArrangePress) -> None:
        await on_rerender(interaction, press.track_id, arrangement=press.arrangement)

    async def on_keep(self, interaction: discord.Interaction, track_id: int) -> None:
        await on_keep(interaction, track_id)

    async def on_remix(self, interaction: discord.Interaction, track_id: int) -> None:
        # the form is the answer: nothing before it
        form = RemixForm(track_id, tr(interaction))
        await interaction.response.send_modal(form)
        form.stop()  # out of discord.py's memory: on_interaction answers it from its id, restart or not

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        await self.tree.set_translator(CommandTranslator())  # the descriptions in each user's language
        if self.test_guild is not None:  # a guild's commands update at once: fast iteration
            self.tree.copy_global_to(guild=self.test_guild)
            await self.tree.sync(guild=self.test_guild)
        else:
            await self.tree.sync()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A press of a component none of ours claims (an id of an older version, or forged) is
        answered out of date, privately: discord.py drops it, and its presser would see "This
        interaction failed". A submitted form is answered here, from its id and fields alone."""
        custom_id = (interaction.data or {}).get("custom_id")
        if interaction.type is discord.InteractionType.modal_submit:
            if (track_id := form_track(custom_id)) is not None:
                await on_form(interaction, track_id)
                return
        elif interaction.type is not discord.InteractionType.component or claimed(custom_id):
            return
        with contextlib.suppress(discord.HTTPException):
            await say(interaction, tr(interaction).gettext(OUT_OF_DATE))

    async def on_ready(self) -> None:
        """Resume delivering, once per process (READY comes again with every new gateway session).
        Not in setup_hook: `run all` logs in before it starts the runner that recovers those jobs."""
        if not self._resumed:
            self._resumed = True
            await self.resume_deliveries()

    async def resume_deliveries(self) -> int:
        """Follow every job of ours whose ending its user has not seen (still going, or ended while
        we were away) and that knows its channel, and post its result there: the interactions of a
        previous run are gone. Returns how many were picked up."""
        resumed = 0
        for pending in await self.core.undelivered():
            delivery = Delivery.resumed(pending)
            if delivery is None or pending.job_id in self.core.followers:
                continue  # not sent from a channel, or an interaction of this run already follows it
            self.core.followers.start(pending.job_id, follow_job(self, delivery, self.core.events(pending.job_id)))
            resumed += 1
        if resumed:
            log.info("resumed delivering %d jobs", resumed)
        return resumed

    async def close(self) -> None:
        """Followers stop with the client; their jobs are resumed by the next start."""
        await self.core.followers.stop()
        # discord.py waits a moment after READY for guilds before it dispatches 'ready'; closed
        # within that moment, its waiting task would dispatch into a closed client and log a
        # traceback. discord.py cancels it itself only when a new READY arrives.
        ready = getattr(self._connection, "_ready_task", None)
        if ready is not None:
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
        await super().close()

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """One place for errors: an option discord.py could not convert (a forged choice or channel)
        is the user's; anything else is logged. Either way the user is told, privately."""
        if isinstance(error, app_commands.TransformerError):
            text = tr(interaction).gettext("🤔 {value!r} is not one of the choices; pick one from the list")
            with contextlib.suppress(discord.HTTPException):
                await say(interaction, text.format(value=str(error.value)[:30]))
            return
        await apologise(interaction, error, f"/{interaction.command.name if interaction.command else '?'}")


def build_client(
    backend: JobBackend,
    db: Database,
    store: ArtifactStore,
    test_guild_id: int | None = None,
    limits: Limits | None = None,
) -> MelomaniaClient:
    """The bot: slash commands (synced at start, to `test_guild_id` when given) and track buttons;
    `limits` bounds how fast each user and channel may compose (the defaults of `Limits` if None)."""
    return MelomaniaClient(CommandService(PLATFORM, backend, db, store, limits), test_guild_id)
