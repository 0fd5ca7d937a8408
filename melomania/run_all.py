"""`melomania run all`: the Telegram and the Discord bot in one process and one event loop, both
composing through one in-process runner, so one model sits in memory and requests from both
platforms share its batches.

Start-up checks both tokens with their services before anything runs (a rejected token is a
`StartError` with words for the user); SIGINT or SIGTERM stops both bots, then the runner (jobs
left unfinished are resumed by the next start). A second signal cuts the shutdown short.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application

from bot.discord import MelomaniaClient, build_client
from bot.telegram import build_application
from jobs.inprocess import InProcessRunner
from jobs.redis_backend import RedisBackend
from storage import Database, LocalArtifactStore

from .composer import Composer
from .settings import Settings

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StartError(Exception):
    """A bot could not start or lost its connection for good; the message is for the user."""


@dataclass(frozen=True)
class Bots:
    """Both front ends on one job backend: the runner (and its one model) is theirs in common."""

    db: Database
    runner: InProcessRunner | RedisBackend
    telegram: Application
    discord: MelomaniaClient


def build_bots(settings: Settings, composer: Composer, telegram_token: str, test_guild: int | None = None) -> Bots:
    db = Database(settings.database_url, retry_for_s=settings.database_retry_s)
    store = LocalArtifactStore(settings.data_dir / "artifacts")
    runner = composer.backend(db, store)
    telegram = build_application(telegram_token, runner, db, store, limits=settings.limits())
    discord_bot = build_client(runner, db, store, test_guild_id=test_guild, limits=settings.limits())
    return Bots(db, runner, telegram, discord_bot)


async def serve_both(
    settings: Settings,
    composer: Composer,
    telegram_token: str,
    discord_token: str,
    test_guild: int | None = None,
) -> None:
    """Serve both bots until SIGINT or SIGTERM (then return normally), or raise StartError."""
    loop = asyncio.get_running_loop()
    serving = asyncio.current_task()
    assert serving is not None
    signalled: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s: stopping both bots", sig.name)
        signalled.append(sig)
        serving.cancel()  # wherever start-up or serving is, its `finally` stops what has started

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await _serve(settings, composer, telegram_token, discord_token, test_guild)
    except asyncio.CancelledError:
        if not signalled:
            raise
        serving.uncancel()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _serve(
    settings: Settings,
    composer: Composer,
    telegram_token: str,
    discord_token: str,
    test_guild: int | None,
) -> None:
    bots = build_bots(settings, composer, telegram_token, test_guild)
    db, runner, telegram, discord_bot = bots.db, bots.runner, bots.telegram, bots.discord
    try:
        await _connect(telegram, discord_bot, discord_token)
        await runner.start()  # before the bots' start-up hooks: it recovers the jobs they re-attach to
        log.info("Telegram and Discord compose through %s", composer.describe())
        if telegram.post_init is not None:
            await telegram.post_init(telegram)
        await telegram.updater.start_polling(bootstrap_retries=3)
        await telegram.start()
        await _gateway(discord_bot)  # until the client closes, a signal cancels us, or it fails for good
    finally:
        await _stop(telegram, discord_bot, runner, db)


async def _connect(telegram: Application, discord_bot: MelomaniaClient, discord_token: str) -> None:
    """Both tokens checked with their services (Telegram's getMe, Discord's login and command sync)."""
    try:
        await telegram.initialize()
    except InvalidToken:  # its message repeats the token: never print it
        raise StartError("Telegram rejected MELOMANIA_TELEGRAM_TOKEN; check it with @BotFather") from None
    except NetworkError as exc:
        raise StartError(f"cannot reach Telegram ({exc.__class__.__name__}); check the network and try again") from None
    try:
        await discord_bot.login(discord_token)
    except discord.LoginFailure:
        raise StartError("Discord rejected MELOMANIA_DISCORD_TOKEN; check it in the developer portal") from None
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        raise StartError(f"cannot reach Discord ({exc.__class__.__name__}); check the network and try again") from None


async def _gateway(discord_bot: MelomaniaClient) -> None:
    """Hold Discord's gateway; discord.py reconnects by itself, and gives up only on a close code
    that reconnecting cannot fix (a revoked token, say)."""
    try:
        await discord_bot.connect()
    except discord.ConnectionClosed as exc:
        raise StartError(f"Discord closed the gateway connection (code {exc.code}); check the bot's token") from None
    except discord.GatewayNotFound:
        raise StartError("cannot reach Discord's gateway; check the network and try again") from None


async def _stop(
    telegram: Application, discord_bot: MelomaniaClient, runner: InProcessRunner | RedisBackend, db: Database
) -> None:
    """Both bots first, so no new job arrives and their followers end; then the runner; then the
    database. One step failing does not skip the others."""
    if telegram.updater is not None and telegram.updater.running:
        await _step("Telegram polling", telegram.updater.stop())
    if telegram.running:
        await _step("the Telegram bot", telegram.stop())
        if telegram.post_stop is not None:
            await _step("the Telegram bot's deliveries", telegram.post_stop(telegram))
    await _step("the Discord bot", discord_bot.close())
    await _step("the Telegram session", telegram.shutdown())
    if telegram.post_shutdown is not None:
        await _step("the Telegram bot's shutdown", telegram.post_shutdown(telegram))
    await _step("the runner", runner.stop())
    await _step("the database", db.dispose())
    log.info("stopped")


async def _step(what: str, step: Awaitable[Any]) -> None:
    try:
        await step
    except Exception as exc:
        log.error("stopping %s failed: %s: %s", what, exc.__class__.__name__, exc)
