"""The command service: every chat intent, platform-neutral. A front end turns an update into an
intent (`bot.core.requests`), calls one method, and shows the `Reply` (or follows the `Started`
job) its own way. This package is the only part of `bot` that touches storage and the job backend.

The service owns the user lookup, idempotency (one job per update or interaction), the rate
limits, access checks (a user reads and changes only their own tracks, or ones shared where they
are) and the bookkeeping of shares and deliveries. Its replies are in the asker's language
(`Who.locale`); a refusal of the job backend's stays in its own words.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from sqlalchemy import select

from bot.core.delivery import Deliveries, Followers
from bot.core.library import Library
from bot.core.recipes import (
    candidate_requests,
    child_request,
    compose_request,
    continue_request,
    group_keys,
    midi_continue_request,
    rerender_request,
)
from bot.core.requests import ComposeTrack, ContinueMidi, Derive, Origin, Rerender, TrackAsk, Who
from bot.grammar import UsageError
from bot.i18n import translator
from bot.limits import Limits
from bot.replies import (
    LIMITED,
    REFUSED,
    SILENT,
    SORRY,
    STORAGE_DOWN,
    UNREADABLE,
    USAGE,
    Reply,
    Started,
    midi_fault_text,
)
from generator import GeneratorError
from jobs.api import ComposeRequest, JobBackend, Refused, UnusableMidi, primer_from_midi
from storage import ArtifactStore, Database, Forbidden, Job, NotFound, Platform, StorageUnavailable, User
from storage.jobs import UNFINISHED, job_for_key
from storage.privacy import forget_user


class CommandService(Library, Deliveries):
    """One platform's commands: its job backend, the database, the artifact store, its limits."""

    def __init__(
        self, platform: str, backend: JobBackend, db: Database, store: ArtifactStore, limits: Limits | None = None
    ) -> None:
        self.platform = platform
        self.backend = backend
        self.db = db
        self.store = store
        self.limits = limits or Limits()  # in memory: a restart forgives everyone, which is fine
        self.followers = Followers()

    # --- starting jobs ---------------------------------------------------------------------------

    async def seen(self, key: str) -> bool:
        """Whether a job exists for this update or interaction (it came again)."""
        return await self.db.run(lambda s: job_for_key(s, key)) is not None

    def over_limit(self, origin: Origin, count: int = 1) -> Reply | None:
        """The polite refusal when this user, or this chat, asks for tracks too fast; else None
        (and the `count` tracks are counted)."""
        who = origin.who
        refusal = self.limits.check(who.limit_key, origin.where.limit_key, count, translator(who.locale))
        return None if refusal is None else Reply(refusal, kind=LIMITED)

    async def _start(
        self,
        origin: Origin,
        build: Callable[[User], Awaitable[ComposeRequest]],
        counted: bool = False,
        count: int = 1,
    ) -> Reply | Started:
        """Once per key: the request built for the user, rate-limited (unless `counted` already),
        submitted with where its result goes; `count` of them (candidates) cost `count` and are
        accepted together or not at all."""
        if await self.seen(group_keys(origin.key, count)[0]):
            return SILENT
        user = await self.user(origin.who)
        try:
            request = await build(user)
        except UsageError as exc:
            return Reply(exc.said(translator(origin.who.locale)), kind=USAGE)
        except (NotFound, Forbidden) as exc:
            return Reply(str(exc), kind=USAGE)
        refusal = None if counted else self.over_limit(origin, count)
        if refusal is not None:
            return refusal
        requests = candidate_requests(replace(request, reply_to=origin.where.reply_to), count)
        try:
            return Started(tuple(await self.backend.submit_all(requests)))
        except (Refused, GeneratorError) as exc:
            return Reply(str(exc), kind=REFUSED)

    async def compose(self, ask: ComposeTrack) -> Reply | Started:
        """/compose, with the user's defaults where they gave nothing; count=N composes N
        candidates at once, for the user to keep one (the others stay in their history)."""
        origin = ask.origin

        async def build(user: User) -> ComposeRequest:
            return compose_request(origin.who, origin.key, ask.spec, user)

        return await self._start(origin, build, count=ask.spec.count)

    async def continue_track(self, ask: TrackAsk) -> Reply | Started:
        """/continue 42 and ➕: a new piece primed with the end of one the user may read here."""
        origin = ask.origin

        async def build(user: User) -> ComposeRequest:
            track = await self.readable(user, ask.track_id, origin.where)
            return continue_request(origin.who, origin.key, track, user)

        return await self._start(origin, build)

    async def derive(self, ask: Derive) -> Reply | Started:
        """🔁 reroll, 🔥 hotter, ❄️ cooler."""
        origin = ask.origin

        async def build(user: User) -> ComposeRequest:
            track = await self.readable(user, ask.track_id, origin.where)
            return child_request(origin.who, origin.key, track, ask.action, ask.remix)

        return await self._start(origin, build)

    async def rerender(self, ask: Rerender) -> Reply | Started:
        """🎹 / 🎸: a track the user may read here, its notes rendered on another instrument or in
        another arrangement (solo, band)."""
        origin = ask.origin

        async def build(user: User) -> ComposeRequest:
            track = await self.readable(user, ask.track_id, origin.where)
            return rerender_request(origin.who, origin.key, track, ask.instrument, ask.arrangement)

        return await self._start(origin, build)

    async def reroll(self, origin: Origin, track_id: int) -> Reply | Started:
        return await self.derive(Derive(origin, "reroll", track_id))

    async def hotter(self, origin: Origin, track_id: int) -> Reply | Started:
        return await self.derive(Derive(origin, "hotter", track_id))

    async def cooler(self, origin: Origin, track_id: int) -> Reply | Started:
        return await self.derive(Derive(origin, "cooler", track_id))

    async def prepare_midi(self, ask: ContinueMidi) -> Reply | None:
        """Before a MIDI file is downloaded: the genre (given or the user's default) and the rate
        limits, which bound downloads too. None: download it and call `continue_midi`."""
        origin = ask.origin
        if await self.seen(origin.key):
            return SILENT
        user = await self.user(origin.who)
        try:
            midi_continue_request(origin.who, origin.key, (), ask.primer_ref, ask.genre, user)
        except UsageError as exc:
            return Reply(exc.said(translator(origin.who.locale)), kind=USAGE)
        return self.over_limit(origin)

    async def continue_midi(self, ask: ContinueMidi, data: bytes) -> Reply | Started:
        """The downloaded file's last bars become the primer of a new piece (counted already)."""
        try:
            primer = await asyncio.to_thread(primer_from_midi, data)
        except UnusableMidi as exc:
            return Reply(midi_fault_text(exc, translator(ask.origin.who.locale)), kind=UNREADABLE)
        origin = ask.origin

        async def build(user: User) -> ComposeRequest:
            return midi_continue_request(origin.who, origin.key, primer, ask.primer_ref, ask.genre, user)

        return await self._start(origin, build, counted=True)

    # --- stopping and forgetting -----------------------------------------------------------------

    async def _unfinished(self, who: Who) -> list[int]:
        """The user's queued and running jobs, newest first (none for someone never seen)."""
        q = (
            select(Job.id)
            .join(User, User.id == Job.user_id)
            .where(User.platform == Platform(who.platform), User.platform_user_id == who.user_id)
            .where(Job.state.in_(UNFINISHED))
            .order_by(Job.id.desc())
        )

        async def ids(s) -> list[int]:
            return list((await s.scalars(q)).all())

        return await self.db.run(ids)

    async def cancel(self, who: Who) -> Reply:
        """/cancel: the user's newest unfinished job is cancelled."""
        t = translator(who.locale)
        for job_id in await self._unfinished(who):
            if await self.backend.cancel(job_id, who.platform, who.user_id):
                return Reply(t.gettext("✖️ Cancelled your track."))
        return Reply(t.gettext("Nothing to cancel: you have no track being composed."))

    async def forget(self, who: Who) -> Reply:
        """/forgetme, once confirmed: the user's unfinished jobs are cancelled, then everything of
        theirs is deleted (storage.privacy.forget_user)."""
        for job_id in await self._unfinished(who):
            await self.backend.cancel(job_id, who.platform, who.user_id)
        gone = await forget_user(self.db, self.store, who.platform, who.user_id)
        t = translator(who.locale)
        done = t.ngettext(
            "🗑 Done: I deleted your settings, favourites and {n} track.",
            "🗑 Done: I deleted your settings, favourites and {n} tracks.",
            gone.tracks,
        )
        return Reply(done.format(n=gone.tracks))


def apology(error: BaseException | None) -> str:
    """What to tell someone whose request failed on our side (a msgid): that the database is out
    of reach, when it stayed so past the retries, else that something went wrong."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, StorageUnavailable):
            return STORAGE_DOWN
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return SORRY
