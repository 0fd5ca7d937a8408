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


@dataclass
class RateLimiter:
    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _hits: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def wait(self, key: str, cost: int = 1) -> float | None:
        """Seconds until `key` may take `cost` more actions (at most `limit`), or None if it may
        now; records nothing."""
        now = self.clock()
        hits = self._hits.get(key)
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        over = len(hits or ()) + cost - self.limit
        if over > 0:  # the oldest `over` hits must leave the window first
            return self.window_s - (now - hits[over - 1])
        return None

    def record(self, key: str, cost: int = 1) -> None:
        now = self.clock()
        self._hits.setdefault(key, deque()).extend([now] * cost)
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

    def check(self, user_key: str, chat_key: str | None = None, cost: int = 1) -> str | None:
        """None when `cost` tracks are allowed (several candidates cost one each; they are then
        counted for both), else the message for the user; a refused action counts for neither, so
        a busy chat does not use up a user's budget."""
        rules = [(self.per_user, user_key, "each", "easy there — you can compose again in")]
        if chat_key is not None:
            rules.append((self.per_chat, chat_key, "per chat", "this chat is composing a lot — try again in"))
        for limiter, key, per, wait_text in rules:
            rule = f"{limiter.limit} tracks per {limiter.window_s:g} s {per}"
            if cost > limiter.limit:  # no wait would make them fit
                return f"that's {cost} tracks at once, more than I compose ({rule}); ask for fewer"
            wait = limiter.wait(key, cost)
            if wait is not None:
                return f"{wait_text} {max(1, round(wait))} s ({rule})"
        for limiter, key, _, _ in rules:
            limiter.record(key, cost)
        return None
