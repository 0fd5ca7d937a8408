"""The job backend for scale-out: bots store the job, enqueue it on Redis (arq), and follow its
progress over pub/sub; `melomania worker` processes elsewhere do the composing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy import func, select

from storage import Database, InvalidTransition, Job, JobState
from storage.jobs import UNFINISHED, cancel_users_job, create_job, fail_job, job_for_key, unfinished_jobs
from storage.users import get_or_create_user

from .admission import admit
from .api import ComposeRequest, JobEvent, Refused
from .channels import CANCEL_CHANNEL, event_from_json, event_json, job_channel
from .receipts import StoredDeliveries
from .settings import RunnerSettings

log = logging.getLogger(__name__)


def arq_job_id(job_id: int) -> str:
    return f"compose:{job_id}"  # one arq job per stored job, however often it is enqueued


class RedisBackend(StoredDeliveries):
    def __init__(self, db: Database, redis_url: str, settings: RunnerSettings | None = None):
        self.db, self.redis_url, self.settings = db, redis_url, settings or RunnerSettings()
        self.redis: ArqRedis | None = None

    async def start(self) -> None:
        self.redis = await create_pool(RedisSettings.from_dsn(self.redis_url))
        # jobs stored but never enqueued (the bot died in between) are enqueued now; arq ignores
        # the ones it already holds, by their job id
        for job in await self.db.run(unfinished_jobs):
            await self.redis.enqueue_job("compose", job.id, _job_id=arq_job_id(job.id))

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def submit(self, request: ComposeRequest) -> int:
        # GeneratorError, before anything is stored; the workers' model and its presets are not
        # known here, so controls are admitted and a worker whose model has none refuses them
        request, _ = admit(request)

        async def record(s):
            # the caps hold across every bot process: they are counted in the database
            total = await s.scalar(select(func.count()).select_from(Job).where(Job.state.in_(UNFINISHED)))
            if total >= self.settings.queue_cap:
                raise Refused("I'm busy composing for lots of people right now; try again in a minute")
            user = await get_or_create_user(s, request.platform, request.user_id, request.display_name or None)
            if user.banned:
                raise Refused("composing is switched off for this account")
            mine = await s.scalar(
                select(func.count()).select_from(Job).where(Job.user_id == user.id, Job.state.in_(UNFINISHED))
            )
            redelivered = await job_for_key(s, request.idempotency_key)
            if mine >= self.settings.per_user and not redelivered:
                raise Refused(f"you already have {mine} tracks on the way; wait for one to finish (or /cancel)")
            return await create_job(s, user, request.to_json(), request.idempotency_key)

        job, created = await self.db.run(record)
        try:
            await self.redis.enqueue_job("compose", job.id, _job_id=arq_job_id(job.id))
        except Exception as exc:
            log.error("job %s: could not queue it on Redis (%s)", job.id, type(exc).__name__)
            if created:  # else its first delivery queued it, or the next start will
                # Told it failed, the user must not get a track later: the next start queues
                # every unfinished job, so this one is ended now. If even that cannot be written,
                # it stays queued and is composed after all, as if this attempt had worked.
                with contextlib.suppress(Exception):
                    await self.db.run(lambda s: fail_job(s, job.id, "my queue was out of reach"))
            raise Refused("I can't reach my composers right now; please try again in a minute") from None
        return job.id

    async def cancel(self, job_id: int, platform: str, user_id: str) -> bool:
        try:
            await self.db.run(lambda s: cancel_users_job(s, job_id, platform, user_id))
        except InvalidTransition:
            return False
        await self.redis.publish(CANCEL_CHANNEL, str(job_id))
        await self.redis.publish(job_channel(job_id), event_json(JobEvent(job_id, "cancelled", reason="cancelled")))
        return True

    async def events(self, job_id: int) -> AsyncIterator[JobEvent]:
        """Progress from whichever worker holds the job; the stored state first."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(job_channel(job_id))  # before reading the state, so nothing falls between
        try:
            job = await self.db.run(lambda s: s.get(Job, job_id))
            if job is None:
                return
            if job.state in (JobState.done, JobState.failed, JobState.cancelled):
                yield JobEvent.stored(job)
                return
            yield JobEvent(job_id, job.state.value, done=0)  # type: ignore[arg-type]
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                event = event_from_json(message["data"])
                yield event
                if event.terminal:
                    return
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()


__all__ = ["RedisBackend"]
