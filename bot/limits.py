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

    def check(self, user_key: str, chat_key: str | None = None, cost: int = 1, t: Translations = ENGLISH) -> str | None:
        """None when `cost` tracks are allowed (several candidates cost one each; they are then
        counted for both), else the message for the user, in their language; a refused action
        counts for neither, so a busy chat does not use up a user's budget."""
        rules = [
            (
                self.per_user,
                user_key,
                t.gettext("easy there — you can compose again in {wait} s ({rule})"),
                t.ngettext("{n} track per {s} s each", "{n} tracks per {s} s each", self.per_user.limit),
            )
        ]
        if chat_key is not None:
            rules.append(
                (
                    self.per_chat,
                    chat_key,
                    t.gettext("this chat is composing a lot — try again in {wait} s ({rule})"),
                    t.ngettext("{n} track per {s} s per chat", "{n} tracks per {s} s per chat", self.per_chat.limit),
                )
            )
        for limiter, key, text, rule in rules:
            if cost > limiter.limit:  # no wait would make them fit
                too_many = t.ngettext(
                    "that's {cost} track at once, more than I compose ({rule}); ask for fewer",
                    "that's {cost} tracks at once, more than I compose ({rule}); ask for fewer",
                    cost,
                )
                return too_many.format(cost=cost, rule=rule_of(limiter, rule))
            wait = limiter.wait(key, cost)
            if wait is not None:
                return refusal(text, limiter, wait, rule)
        for limiter, key, _, _ in rules:
            limiter.record(key, cost)
        return None


def refusal(text: str, limiter: RateLimiter, wait: float, rule: str) -> str:
    """A refusal's words with its numbers: the whole seconds to wait, and the limit's rule."""
    return text.format(wait=max(1, round(wait)), rule=rule_of(limiter, rule))


def rule_of(limiter: RateLimiter, rule: str) -> str:
    """A limit's rule ('6 tracks per 60 s each') with its numbers."""
    return rule.format(n=limiter.limit, s=f"{limiter.window_s:g}")
