"""Updates handled concurrently, each person's in the order they came: one slow upload or job
submission no longer holds up everyone else, yet /settings genre=jazz followed by /compose is
still handled in that order, and an update Telegram delivers twice is handled after the first
(so the service's idempotency check sees it)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Hashable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

MAX_CONCURRENT_UPDATES = 64  # waiting for one's turn holds a slot, so leave room for bursts


def sender_of(update: object) -> Hashable | None:
    """Whose turn an update waits for: its sender (a message, a press, an inline query), else its
    chat; None (no order to keep) for anything that names neither."""
    if not isinstance(update, Update):
        return None
    if update.effective_user is not None:
        return ("user", update.effective_user.id)
    if update.effective_chat is not None:
        return ("chat", update.effective_chat.id)
    return None


class PerSenderOrder(BaseUpdateProcessor):
    """Up to `max_concurrent_updates` updates at once; those of one sender one after another, in
    the order the application handed them over (asyncio locks wake their waiters first come,
    first served)."""

    def __init__(self, max_concurrent_updates: int = MAX_CONCURRENT_UPDATES) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._queued: collections.Counter[Hashable] = collections.Counter()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = sender_of(update)
        if key is None:
            await coroutine
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._queued[key] += 1
        try:
            async with lock:
                await coroutine
        finally:
            self._queued[key] -= 1
            if not self._queued[key]:  # nobody else of theirs waiting: forget the lock
                del self._queued[key]
                self._locks.pop(key, None)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass
