"""Rate limits: sliding windows per user and per chat."""

from __future__ import annotations

from bot.limits import Limits, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_limit_per_window_then_a_wait_that_shrinks():
    clock = Clock()
    rl = RateLimiter(3, 60.0, clock)
    assert [rl.retry_after("u") for _ in range(3)] == [None, None, None]
    assert rl.retry_after("u") == 60.0
    assert rl.retry_after("other") is None  # keys are independent
    clock.now = 45.0
    assert rl.retry_after("u") == 15.0
    clock.now = 60.0
    assert rl.retry_after("u") is None  # the first hit left the window


def test_a_refused_action_does_not_use_up_the_budget():
    clock = Clock()
    rl = RateLimiter(1, 10.0, clock)
    assert rl.retry_after("u") is None
    for t in range(1, 10):
        clock.now = float(t)
        assert rl.retry_after("u") is not None
    clock.now = 10.0
    assert rl.retry_after("u") is None


def test_a_busy_group_chat_is_limited_even_when_each_user_is_not():
    clock = Clock()
    limits = Limits(RateLimiter(2, 60.0, clock), RateLimiter(3, 60.0, clock))
    answers = [limits.check(f"user{i}", "group") for i in range(4)]
    assert answers[:3] == [None, None, None]
    assert "this chat" in answers[3] and "60 s" in answers[3]
    assert limits.check("user0", "group") is not None
    one = Limits(RateLimiter(1, 60.0, clock))
    assert one.check("solo") is None and "compose again in 60 s (1 track per 60 s each)" in one.check("solo")


def test_a_refusal_by_the_chat_does_not_use_up_the_users_budget():
    clock = Clock()
    limits = Limits(RateLimiter(2, 60.0, clock), RateLimiter(1, 60.0, clock))
    assert limits.check("alice", "busy") is None
    refused = limits.check("alice", "busy")
    assert refused is not None and "(1 track per 60 s per chat)" in refused
    assert limits.check("alice", "quiet") is None  # her second of two: the refusal did not count
    assert limits.check("alice", "quiet2") is not None


def test_several_candidates_cost_one_each_and_a_group_that_can_never_fit_says_so():
    clock = Clock()
    limits = Limits(RateLimiter(6, 60.0, clock), RateLimiter(20, 60.0, clock))
    assert limits.check("alice", "chat", cost=4) is None
    clock.now = 10.0
    assert limits.check("alice", "chat", cost=2) is None  # 6 of 6
    clock.now = 20.0
    # room for 3 more only once the first 4 have left the window, at 60 s
    assert "compose again in 40 s (6 tracks per 60 s each)" in limits.check("alice", "chat", cost=3)
    assert limits.check("bob", "chat", cost=4) is None  # the chat's 20 are far from used up
    small = Limits(RateLimiter(2, 60.0, clock))
    assert (
        small.check("carol", cost=3)
        == "that's 3 tracks at once, more than I compose (2 tracks per 60 s each); ask for fewer"
    )
    assert small.check("carol", cost=2) is None  # the refusal counted nothing
