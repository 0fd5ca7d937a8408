"""The Discord front end: an adapter from interactions to the command service (`bot.core`) and back.

client = build_client(runner, db, store, test_guild_id=1234)
await client.start(token)
"""

from bot.discord.client import MelomaniaClient, build_client
from bot.discord.commands import ForgetButton
from bot.discord.views import TrackButton, track_view

__all__ = ["ForgetButton", "MelomaniaClient", "TrackButton", "build_client", "track_view"]
