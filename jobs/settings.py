"""How a runner composes: batch size, caps, timeouts. Read by both job backends (the Redis
backend counts the same caps in the database), so it lives apart from either."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerSettings:
    max_batch: int = 16  # rows composed together in one forward pass
    queue_cap: int = 200  # accepted and unfinished jobs, all users together
    per_user: int = 4  # accepted and unfinished jobs per user (a chat's /compose count=4 fits)
    running_per_user: int = 1  # a user's jobs composed at once; the others wait their turn
    job_timeout_s: float = 900.0
    max_tries: int = 3  # compositions per job before a degenerate piece is accepted
    max_attempts: int = 3  # starts per job across crashes and restarts
    render_workers: int = 2  # processes (render_pool.py)
    progress_interval_s: float = 0.25
    torch_threads: int | None = None  # None: decoding_threads()
