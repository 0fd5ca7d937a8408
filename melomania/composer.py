"""Where a bot process's tracks are composed: in the process itself (a loaded model and the
render tools), or by `melomania worker` processes over Redis when MELOMANIA_REDIS_URL is set, in
which case the bot process loads no model and never imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from storage import ArtifactStore, Database

if TYPE_CHECKING:  # a Redis-mode bot never imports torch
    from generator.checkpoint import LoadedModel


@dataclass(frozen=True)
class Composer:
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    loaded: LoadedModel | None = None  # in-process only
    soundfont: Path | None = None  # in-process only; None: Debian's default font
    threads: int | None = None  # in-process only: torch threads for composing (None: the runner's choice)

    def backend(self, db: Database, store: ArtifactStore, platforms: tuple[str, ...] | None = None):
        """A job backend the bots submit to; `start()` it before use and `stop()` it after.
        `platforms`: the chats this process serves (None: all), whose jobs an in-process runner
        resumes at its start."""
        if self.redis_url:
            from jobs.redis_backend import RedisBackend

            return RedisBackend(db, self.redis_url)
        from jobs.inprocess import InProcessRunner, RunnerSettings

        loaded = self.loaded
        if loaded is None:
            raise ValueError("an in-process composer needs a loaded model")
        return InProcessRunner(
            db,
            store,
            lambda: loaded,
            RunnerSettings(torch_threads=self.threads),
            soundfont=str(self.soundfont) if self.soundfont else None,
            platforms=platforms,
        )

    def describe(self) -> str:
        if self.redis_url:
            return "melomania worker processes over Redis"
        return f"one in-process runner (model {self.loaded.name if self.loaded else 'none'})"
