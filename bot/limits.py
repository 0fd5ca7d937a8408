"""Per-user and per-chat command rate limits, the same for every front end.

A sliding window per key: at most `limit` compose-type actions in `window_s` seconds. The job
runner's quotas bound what is queued; these bound how fast one person or one busy group chat may
ask, before anything is queued, with a polite answer saying when to try again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.i18n import ENGLISH, Translations


@dataclass
class RateLimiter:
    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _hits: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def wait(self, key: str) -> float | None:
        """Seconds until `key` may act again, or None if it may now; records nothing."""
        now = self.clock()
        hits = self._hits.get(key)
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        if hits and len(hits) >= self.limit:
            return self.window_s - (now - hits[0])
        return None

    def record(self, key: str) -> None:
        now = self.clock()
        self._hits.setdefault(key, deque()).append(now)
        if len(self._hits) > 10_000:  # forget idle keys so memory stays bounded
            self._hits = {k: v for k, v in self._hits.items() if v and now - v[-1] < self.window_s}

    def retry_after(self, key: str) -> float | None:
        """Record an action for `key` and return None, or, over the limit, the seconds until one
        more is allowed (and record nothing)."""
        wait = self.wait(key)
        if wait is None:
            self.record(key)
        return wait


@dataclass
class Limits:
    """What one front end enforces: per user and per chat (a group chat shares one budget)."""

    per_user: RateLimiter = field(default_factory=lambda: RateLimiter(6, 60.0))
    per_chat: RateLimiter = field(default_factory=lambda: RateLimiter(20, 60.0))

    def check(self, user_key: str, chat_key: str | None = None, t: Translations = ENGLISH) -> str | None:
        """None when allowed (the action is then counted for both), else the message for the
        user, in their language; a refused action counts for neither, so a busy chat does not use
        up a user's budget."""
        wait = self.per_user.wait(user_key)
        if wait is not None:
            text = t.gettext("easy there — you can compose again in {wait} s ({rule})")
            rule = t.ngettext("{n} track per {s} s each", "{n} tracks per {s} s each", self.per_user.limit)
            return refusal(text, self.per_user, wait, rule)
        if chat_key is not None:
            wait = self.per_chat.wait(chat_key)
            if wait is not None:
                text = t.gettext("this chat is composing a lot — try again in {wait} s ({rule})")
                rule = t.ngettext("{n} track per {s} s per chat", "{n} tracks per {s} s per chat", self.per_chat.limit)
                return refusal(text, self.per_chat, wait, rule)
            self.per_chat.record(chat_key)
        self.per_user.record(user_key)
        return None


def refusal(text: str, limiter: RateLimiter, wait: float, rule: str) -> str:
    """A refusal's words with its numbers: the whole seconds to wait, and the limit's rule."""
    return text.format(wait=max(1, round(wait)), rule=rule.format(n=limiter.limit, s=f"{limiter.window_s:g}"))
