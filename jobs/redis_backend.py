"""The job backend for scale-out: bots store the job, enqueue it on Redis (arq), and follow its
progress over pub/sub; `melomania worker` processes elsewhere do the composing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import func, select

from storage import Database, InvalidTransition, Job
from storage.jobs import FINISHED, UNFINISHED, cancel_users_job, create_job, fail_job, job_for_key, unfinished_jobs
from storage.users import get_or_create_user

from .admission import BUSY, admit, over_quota
from .api import ComposeRequest, JobEvent, Refused
from .channels import CANCEL_CHANNEL, event_from_json, event_json, job_channel
from .receipts import StoredDeliveries
from .settings import RunnerSettings

log = logging.getLogger(__name__)
FOLLOW_AGAIN_S = (0.5, 5.0)  # the first wait to follow a job again after Redis dropped us, and the longest


def arq_job_id(job_id: int) -> str:
    return f"compose:{job_id}"  # one arq job per stored job, however often it is enqueued


async def enqueue_unfinished(db: Database, redis: ArqRedis) -> int:
    """Enqueue every stored job still queued or running; arq ignores those it holds already, by
    their job id (queued, in progress, or ended with its result kept). What it picks up are jobs
    it never had (a bot died between storing and enqueueing) or lost (Redis crashed between two
    snapshots). Returns how many arq took."""
    taken = 0
    for job in await db.run(unfinished_jobs):
        taken += await redis.enqueue_job("compose", job.id, _job_id=arq_job_id(job.id)) is not None
    return taken


class RedisBackend(StoredDeliveries):
    def __init__(self, db: Database, redis_url: str, settings: RunnerSettings | None = None):
        self.db, self.redis_url, self.settings = db, redis_url, settings or RunnerSettings()
        self.redis: ArqRedis | None = None

    async def start(self) -> None:
        self.redis = await create_pool(RedisSettings.from_dsn(self.redis_url))
        await enqueue_unfinished(self.db, self.redis)

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def submit(self, request: ComposeRequest) -> int:
        [job_id] = await self.submit_all([request])
        return job_id

    async def submit_all(self, requests: Sequence[ComposeRequest]) -> list[int]:
        """Store one user's requests together (a chat's candidates), each idempotent by its key,
        and queue them; or Refused, with nothing stored, when they do not all fit the caps."""
        # GeneratorError, before anything is stored; the workers' model and its presets are not
        # known here, so controls are admitted and a worker whose model has none refuses them
        requests = [admit(r)[0] for r in requests]
        first = requests[0]

        async def record(s):
            # the caps hold across every bot process: they are counted in the database
            total = await s.scalar(select(func.count()).select_from(Job).where(Job.state.in_(UNFINISHED)))
            if total + len(requests) > self.settings.queue_cap:
                raise Refused(BUSY)
            user = await get_or_create_user(s, first.platform, first.user_id, first.display_name or None)
            if user.banned:
                raise Refused("composing is switched off for this account")
            mine = await s.scalar(
                select(func.count()).select_from(Job).where(Job.user_id == user.id, Job.state.in_(UNFINISHED))
            )
            redelivered = await job_for_key(s, first.idempotency_key)
            if not redelivered and (refusal := over_quota(mine, len(requests), self.settings.per_user)):
                raise Refused(refusal)
            return [await create_job(s, user, r.to_json(), r.idempotency_key) for r in requests]

        made = await self.db.run(record)
        try:
            for job, _ in made:
                await self.redis.enqueue_job("compose", job.id, _job_id=arq_job_id(job.id))
        except Exception as exc:
            log.error("jobs %s: could not queue them on Redis (%s)", [job.id for job, _ in made], type(exc).__name__)
            # Told they failed, the user must not get tracks later: the next start queues every
            # unfinished job, so these are ended now (those queued already too: a worker leaves an
            # ended job alone). If even that cannot be written, they stay queued and are composed
            # after all, as if this attempt had worked. One not created now was queued by its
            # first delivery, or will be by the next start.
            for job, created in made:
                if created:
                    with contextlib.suppress(Exception):
                        await self.db.run(lambda s, job_id=job.id: fail_job(s, job_id, "my queue was out of reach"))
            raise Refused("I can't reach my composers right now; please try again in a minute") from None
        return [job.id for job, _ in made]

    async def cancel(self, job_id: int, platform: str, user_id: str) -> bool:
        try:
            await self.db.run(lambda s: cancel_users_job(s, job_id, platform, user_id))
        except InvalidTransition:
            return False
        await self.redis.publish(CANCEL_CHANNEL, str(job_id))
        await self.redis.publish(job_channel(job_id), event_json(JobEvent(job_id, "cancelled", reason="cancelled")))
        return True

    async def events(self, job_id: int) -> AsyncIterator[JobEvent]:
        """Progress from whichever worker holds the job; the stored state first. A connection to
        Redis that drops (a restart) is made again and the state read again: an ending published
        while we were away is stored, so it is not missed; until Redis is back, we keep trying
        (the front end gives up on a job after its own timeout)."""
        announced, wait = False, FOLLOW_AGAIN_S[0]
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(job_channel(job_id))  # before reading the state, so nothing falls between
                job = await self.db.run(lambda s: s.get(Job, job_id))
                if job is None:
                    return
                if job.state in FINISHED:
                    yield JobEvent.stored(job)
                    return
                if not announced:
                    yield JobEvent(job_id, job.state.value, done=0)  # type: ignore[arg-type]
                    announced = True
                wait = FOLLOW_AGAIN_S[0]  # through again: the next drop starts over
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    event = event_from_json(message["data"])
                    yield event
                    if event.terminal:
                        return
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning(
                    "job %s: lost Redis while following it (%s); following it again", job_id, type(exc).__name__
                )
            finally:
                with contextlib.suppress(Exception):  # a connection that dropped cannot unsubscribe
                    await pubsub.unsubscribe()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(wait)
            wait = min(2 * wait, FOLLOW_AGAIN_S[1])


__all__ = ["RedisBackend"]
