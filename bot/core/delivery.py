"""Getting a job's ending to its chat, the same for every platform: following jobs in background
tasks (one per job), resuming after a restart, and the bookkeeping around a delivered track (its
share into the chat before it appears, the platform's file id, the receipt).

A platform adapter only shows things: it edits its progress message with the lines `watch` hands
it, and posts the `TrackCard`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bot.core.library import card
from bot.i18n import ENGLISH, PhraseError, Translations, translator
from bot.replies import EXPIRED, TrackCard, event_line
from jobs.api import JobBackend, JobEvent
from storage import ArtifactStore, Database, Track, User
from storage.jobs import set_reply_to
from storage.shares import record_share
from storage.tracks import cache_file_id

log = logging.getLogger(__name__)

FOLLOW_TIMEOUT_S = 1200.0  # a job the backend never finishes stops being followed


class Unavailable(PhraseError):
    """A track that cannot be sent (its audio expired, or too large here); words for the user."""


@dataclass(frozen=True)
class Pending:
    """A job of this platform whose ending its user has not seen, where it goes, and the language
    its user is answered in."""

    job_id: int
    user_id: str
    reply_to: dict[str, Any]
    locale: str = "en"


def progress_of(event: JobEvent, t: Translations = ENGLISH) -> str:
    return event_line(event.kind, event.done, event.total, event.eta_s, event.position, event.reason, t)


async def watch(
    events: AsyncIterator[JobEvent],
    show: Callable[[str], Awaitable[None]],
    interval_s: float,
    shown: str | None = None,
    t: Translations = ENGLISH,
) -> JobEvent | None:
    """Show each new progress line (at most one per `interval_s`) until the job ends; returns its
    ending, or None when the events stop without one (it stays undelivered for the next start)."""
    last = 0.0
    async with asyncio.timeout(FOLLOW_TIMEOUT_S):
        async for event in events:
            if event.terminal:
                return event
            text, now = progress_of(event, t), time.monotonic()
            if text != shown and now - last >= interval_s:
                await show(text)
                shown, last = text, now
    return None


class Followers:
    """One background task per followed job, kept referenced; stopped together (their jobs stay
    undelivered and are resumed by the next start)."""

    def __init__(self, describe: Callable[[BaseException], str] = lambda exc: exc.__class__.__name__) -> None:
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.describe = describe  # an error as the log shows it (never a token)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._tasks

    def start(self, job_id: int, work: Coroutine[Any, Any, None]) -> None:
        if job_id in self._tasks:
            work.close()  # already on its way (a redelivered update that reached the same job)
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[job_id] = task
        task.add_done_callback(lambda done: self._ended(job_id, done))

    def _ended(self, job_id: int, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("following job %s failed: %s: %s", job_id, exc.__class__.__name__, self.describe(exc))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Deliveries:
    """The service's delivery side (mixed into `CommandService`)."""

    platform: str
    backend: JobBackend
    db: Database
    store: ArtifactStore

    def events(self, job_id: int) -> AsyncIterator[JobEvent]:
        return self.backend.events(job_id)

    async def undelivered(self) -> list[Pending]:
        """This platform's jobs to follow after a start-up, those that know where they go."""
        found = await self.backend.undelivered(self.platform)
        return [
            Pending(p.job_id, p.request.user_id, p.request.reply_to, p.request.locale)
            for p in found
            if p.request.reply_to
        ]

    async def set_reply_to(self, job_id: int, reply_to: dict[str, Any]) -> None:
        await self.db.run(lambda s: set_reply_to(s, job_id, reply_to))

    async def delivered(self, job_id: int) -> None:
        """The receipt: its user has seen how the job ended, so a restart does not deliver it again."""
        await self.backend.delivered(job_id)

    async def finished(self, track_id: int, locale: str = "en") -> TrackCard:
        """A job's new track, to deliver, captioned in its user's language."""
        return card(await self.db.run(lambda s: s.get(Track, track_id)), self.platform, translator(locale))

    async def share_here(self, track_id: int, chat_id: str, message_id: str | int | None = None) -> None:
        """A delivered track is shared into its chat (before it appears, so that a press the moment
        it does already passes the access check): anyone there may reroll, continue or keep it."""
        here = (self.platform, chat_id)

        async def share(s):
            track = await s.get(Track, track_id)
            owner = await s.get(User, track.owner_id)
            await record_share(s, owner, track_id, here, message_id, here)

        await self.db.run(share)

    async def artifact(self, key: str) -> bytes:
        return await asyncio.to_thread(self.store.get, key)

    async def audio(self, track: TrackCard) -> bytes:
        if track.mp3_key is None:
            raise Unavailable(EXPIRED, track_id=track.track_id)
        return await self.artifact(track.mp3_key)

    async def remember_file_id(self, track_id: int, file_id: str) -> None:
        """The platform's id of the uploaded audio: sending it again needs no upload."""
        await self.db.run(lambda s: cache_file_id(s, track_id, self.platform, file_id))
