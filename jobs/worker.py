"""`melomania worker`: an arq worker that pulls compose jobs from Redis, batches the ones it holds
through the same generation loop as the in-process runner, and publishes progress over pub/sub.

A worker killed mid-job stops refreshing the job's in-progress key; once that lapses (a few
heartbeats), another worker picks the job up again. Guarded job transitions in storage make sure
only one of them can finish it, so the user gets exactly one result: each worker ends a job only
in the attempt it started it in, and lets it go, saying nothing, once another has started it again
(a worker whose claim lapsed while Redis was unreachable) or when arq cancels it (shutting down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.worker import func

from generator.device import Resolved
from storage import Database, InvalidTransition, Job, JobState, LocalArtifactStore
from storage.db import RETRY_FOR_S
from storage.jobs import FINISHED, fail_job, requeue_job

from .api import ComposeRequest, JobEvent
from .channels import CANCEL_CHANNEL, publish
from .inprocess import InProcessRunner
from .redis_backend import enqueue_unfinished
from .settings import RunnerSettings

log = logging.getLogger(__name__)
HEARTBEAT_S = float(os.environ.get("MELOMANIA_WORKER_HEARTBEAT_S", "5"))
REQUEUE_S = 20.0  # how often a worker enqueues again the stored jobs a crashed Redis forgot
GENERATION_TIMEOUT_S = 900.0
# arq's own limit must outlast the runner's (each composition of a job gets its own timeout, a
# degenerate piece is composed again, then rendering): a job arq cancels says nothing to its user,
# one the runner times out says why.
JOB_TIMEOUT_S = int(GENERATION_TIMEOUT_S * (RunnerSettings.max_tries + 1))
MAX_TRIES = 5  # arq tries; a job picked up this often (its workers died or stopped) is failed on the last
# arq is allowed one more, in which the job is only failed: a job whose worker died in the last try
# before its start was stored is still queued, and would otherwise stay so with no word to its user.
ARQ_TRIES = MAX_TRIES + 1


MAX_JOBS = 16  # jobs a worker holds at once, composed together in one batch


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs from the application's settings, handed down in arq's ctx (the worker
    reads no settings of its own: `melomania worker` builds this from MELOMANIA_*)."""

    checkpoint: Path
    database_url: str = field(repr=False)  # may carry a password
    data_dir: Path
    database_retry_s: float = RETRY_FOR_S
    soundfont: Path | None = None
    threads: int | None = None
    # MELOMANIA_DEVICE, MELOMANIA_DTYPE and MELOMANIA_EXACT_DECODING, checked against the machine
    # by `melomania worker` before it connects
    placement: Resolved = field(default_factory=Resolved)


async def startup(ctx: dict[str, Any]) -> None:
    from generator import load_model

    settings: WorkerConfig = ctx["config"]
    ckpt = settings.checkpoint
    db = Database(settings.database_url, retry_for_s=settings.database_retry_s)

    runner = InProcessRunner(
        db,
        LocalArtifactStore(settings.data_dir / "artifacts"),
        lambda: load_model(ckpt, settings.placement),
        RunnerSettings(
            max_batch=MAX_JOBS,
            queue_cap=10_000,
            per_user=10_000,
            # arq hands out at most max_jobs at once: jobs held back for their user's turn would
            # fill those places and keep other users' jobs waiting in Redis
            running_per_user=MAX_JOBS,
            job_timeout_s=GENERATION_TIMEOUT_S,
            torch_threads=settings.threads,
        ),
        soundfont=str(settings.soundfont) if settings.soundfont else None,
    )
    await runner.start(recover=False)  # Redis redelivers unfinished jobs itself
    ctx.update(
        db=db,
        runner=runner,
        cancel_listener=asyncio.create_task(_listen_for_cancels(ctx["redis"], runner)),
        claims=asyncio.create_task(_shorten_claims(ctx["redis"])),
        requeue=asyncio.create_task(_requeue_forgotten(db, ctx["redis"])),
    )
    log.info("worker ready with %s on %s", ckpt, settings.placement.label)


async def shutdown(ctx: dict[str, Any]) -> None:
    for name in ("cancel_listener", "claims", "requeue"):
        if task := ctx.get(name):
            task.cancel()
    if runner := ctx.get("runner"):
        await runner.stop()
    if db := ctx.get("db"):
        await db.dispose()


async def _listen_for_cancels(redis, runner: InProcessRunner) -> None:
    """Hear cancels for as long as the worker runs: a dropped connection is listened on again, or
    every job cancelled from then on would be composed to its end."""
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(CANCEL_CHANNEL)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    runner.mark_cancelled(int(message["data"]))
        except Exception as exc:
            log.warning("lost the cancel channel (%s); listening again", type(exc).__name__)
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


async def _shorten_claims(redis) -> None:
    """arq claims a job for its whole timeout (an hour), and our heartbeat shortens the claim only
    once the job is under way: a worker killed in between would keep the job from everyone for
    that hour. Every worker cuts any claim longer than a heartbeat's down to one; a live owner's
    heartbeat keeps its own fresh, a dead one's lapses like any other."""
    claim_ms = int(HEARTBEAT_S * 3 * 1000)
    while True:
        try:
            async for key in redis.scan_iter(match=in_progress_key_prefix + "compose:*"):
                await redis.pexpire(key, claim_ms, lt=True)  # LT: never lengthens one
        except Exception as exc:
            log.warning("could not look over the claims on jobs (%s)", type(exc).__name__)
        await asyncio.sleep(HEARTBEAT_S)


async def _requeue_forgotten(db: Database, redis) -> None:
    """PostgreSQL keeps the jobs, Redis only their queue: a Redis that crashed between snapshots
    comes back without jobs it had queued, and nobody would enqueue them again until a bot
    restarts. Every worker, at start-up and then every REQUEUE_S, enqueues again each stored
    unfinished job that Redis no longer holds."""
    while True:
        try:
            if taken := await enqueue_unfinished(db, redis):
                log.warning("enqueued %d stored jobs again that Redis had lost", taken)
        except Exception as exc:
            log.warning("could not look for jobs Redis lost (%s)", type(exc).__name__)
        await asyncio.sleep(REQUEUE_S)


async def _heartbeat(redis, arq_job_id: str) -> None:
    """Keep our claim short and fresh, so a dead worker's job is retried within a few heartbeats.
    A refresh that fails is tried again: if the claim lapses meanwhile and another worker starts
    the job, our attempt can no longer end it (storage.jobs), and the runner lets it go."""
    key, claim_ms, last = in_progress_key_prefix + arq_job_id, int(HEARTBEAT_S * 3 * 1000), time.monotonic()
    while True:
        try:
            await redis.pexpire(key, claim_ms)
            last = time.monotonic()
        except Exception as exc:
            log.warning("could not refresh the claim on %s for %.0f s (%s)", arq_job_id, time.monotonic() - last, exc)
        await asyncio.sleep(HEARTBEAT_S)


async def compose(ctx: dict[str, Any], job_id: int) -> str:
    """Compose one stored job and publish its events. Whatever goes wrong here, short of this
    worker dying (then another tries again), the job ends failed with a reason its user sees."""
    try:
        # Ours ends a minute before arq's: arq would cancel the job and not retry it, leaving it
        # stored as running, with no one to tell its user.
        async with asyncio.timeout(JOB_TIMEOUT_S - 60) as deadline:
            return await _compose(ctx, job_id)
    except TimeoutError:
        if not deadline.expired():  # a library's own timeout, deep inside: an error like any other
            return await _failed_in_worker(ctx, job_id)
        log.error("job %s ran for over %s s", job_id, JOB_TIMEOUT_S - 60)
        return await _failed_in_worker(ctx, job_id, "it took too long; try a shorter piece")
    except asyncio.CancelledError:  # arq stopping this worker: it runs the job again elsewhere, and that tells the user
        ctx["runner"].release(job_id)
        raise
    except Exception:
        log.exception("job %s failed in the worker", job_id)
        return await _failed_in_worker(ctx, job_id)


async def _failed_in_worker(
    ctx: dict[str, Any], job_id: int, reason: str = "the composer hit an error; please try again"
) -> str:
    """Stop composing the job here and fail it (in our attempt) for its user. Let go rather than
    cancelled: if Redis hands the job back later (another worker took it over and died), it is
    composed again, not ended as if its user had cancelled it."""
    runner: InProcessRunner = ctx["runner"]
    attempt = runner.attempt(job_id)
    runner.release(job_id)
    await _fail(ctx, job_id, reason, attempt)
    return "failed"


async def _fail(ctx: dict[str, Any], job_id: int, reason: str, attempt: int | None = None) -> None:
    """Fail the job (in `attempt`, when this worker started it) and tell its user."""
    db: Database = ctx["db"]
    try:
        await db.run(lambda s: fail_job(s, job_id, reason, attempt))
    except InvalidTransition:  # it ended meanwhile (a cancel, another worker): that ending stands
        await _publish_stored_ending(ctx, job_id)
        return
    except Exception:
        log.exception("job %s: could not store its failure; telling the user anyway", job_id)
    try:
        await publish(ctx["redis"], JobEvent(job_id, "failed", reason=reason))
    except Exception:  # Redis gone too: the stored state (or the next start) has to tell them
        log.exception("job %s: could not publish its failure", job_id)


async def _publish_stored_ending(ctx: dict[str, Any], job_id: int) -> None:
    """Publish how storage says the job ended: whoever ended it may have died before telling
    anyone, and the user's bot is still listening."""
    job = await ctx["db"].run(lambda s: s.get(Job, job_id))
    if job is not None and job.state in FINISHED:
        try:
            await publish(ctx["redis"], JobEvent.stored(job))
        except Exception:
            log.exception("job %s: could not publish its ending", job_id)


async def _compose(ctx: dict[str, Any], job_id: int) -> str:
    db: Database = ctx["db"]
    redis = ctx["redis"]
    job = await db.run(lambda s: s.get(Job, job_id))
    if job is None:
        return "unknown job"
    if job.state in FINISHED:  # ended by a worker that may have died before telling anyone
        await _publish_stored_ending(ctx, job_id)
        return job.state.value
    # Picked up this often, its workers kept dying: failed now, with a word to its user, from the
    # last try if a worker died composing it (arq would not call again), else from the extra one.
    tries = ctx.get("job_try", 1)
    if tries > MAX_TRIES or (job.state is JobState.running and tries >= MAX_TRIES):
        await _fail(ctx, job_id, "it stopped the composer several times; please try something else")
        return "failed"
    if job.state is JobState.running:  # a retry: the last worker died while composing it
        try:
            await db.run(lambda s: requeue_job(s, job_id))
        except InvalidTransition:  # it ended meanwhile, at the last worker's hands
            await _publish_stored_ending(ctx, job_id)
            return "ended"
    runner: InProcessRunner = ctx["runner"]
    beat = asyncio.create_task(_heartbeat(redis, ctx["job_id"]))
    try:
        async for event in runner.adopt(job_id, ComposeRequest.from_json(job.request)):
            if event.kind == "released":  # another worker has it now, and tells the user
                return event.kind
            if event.terminal:
                await publish(redis, event)
                return event.kind
            try:
                await publish(redis, event)
            except Exception as exc:  # a progress line lost is no reason to fail the job
                log.warning("job %s: could not publish progress (%s)", job_id, type(exc).__name__)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    return "ended"


class WorkerSettings:
    functions = [func(compose, name="compose", timeout=JOB_TIMEOUT_S, max_tries=ARQ_TRIES)]  # noqa: RUF012
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = MAX_JOBS
    job_timeout = JOB_TIMEOUT_S
    keep_result = 60
    # arq refreshes a health key this often (its expiry a second later): `melomania worker --check`
    # reads it, so a container's health check sees a stalled worker within a minute
    health_check_interval = 30
