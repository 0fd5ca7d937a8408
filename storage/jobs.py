"""Jobs: one row per compose request, moved through its states by guarded transitions.

queued → running → done | failed;  queued | running → cancelled;  running → queued (retry, after the
process composing it died). Each move is one conditional UPDATE, so two workers can never both
start, or both finish, a job; and an end written for an attempt (`attempt`, the job's `attempts`
when that worker started it) holds only while no other worker has started the job again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .db import insert_ignoring_duplicates
from .errors import InvalidTransition, NotFound
from .models import Job, JobState, Platform, User, utcnow

ALLOWED_FROM: dict[JobState, tuple[JobState, ...]] = {
    JobState.running: (JobState.queued,),
    JobState.done: (JobState.running,),
    JobState.failed: (JobState.queued, JobState.running),
    JobState.cancelled: (JobState.queued, JobState.running),
    JobState.queued: (JobState.running,),  # a failed job told its user so: it is never composed again
}
FINISHED = (JobState.done, JobState.failed, JobState.cancelled)
UNFINISHED = (JobState.queued, JobState.running)


async def create_job(
    session: AsyncSession, user: User, request: dict[str, Any], idempotency_key: str | None = None
) -> tuple[Job, bool]:
    """(job, created). A redelivered chat update (same idempotency key) returns the first job."""
    if idempotency_key is None:
        job = Job(user_id=user.id, request=request)
        session.add(job)
        await session.flush()
        return job, True
    result = await session.execute(
        insert_ignoring_duplicates(session, Job, ["idempotency_key"]).values(
            user_id=user.id, request=request, idempotency_key=idempotency_key
        )
    )
    job = (await session.execute(select(Job).where(Job.idempotency_key == idempotency_key))).scalar_one()
    return job, result.rowcount == 1


async def job_for_key(session: AsyncSession, idempotency_key: str | None) -> int | None:
    """The id of the job already stored for this update or interaction, if any (a redelivery)."""
    if not idempotency_key:
        return None
    return await session.scalar(select(Job.id).where(Job.idempotency_key == idempotency_key))


async def transition(
    session: AsyncSession, job_id: int, to: JobState, attempt: int | None = None, **values: Any
) -> Job:
    """Move a job to `to` if its current state allows it (and, given `attempt`, if it is still in
    that attempt); else InvalidTransition (nothing changes)."""
    now = utcnow()
    extra: dict[str, Any] = {"updated_at": now, **values}
    if to is JobState.running:
        extra |= {"started_at": now, "attempts": Job.attempts + 1, "progress": 0.0, "error": None}
    elif to in FINISHED:
        extra |= {"finished_at": now}
    # An end written for an attempt also needs the job still running: requeued for another worker
    # (attempts unchanged until that one starts it), it is no longer this attempt's to end.
    allowed = ALLOWED_FROM[to] if attempt is None else (JobState.running,)
    owned = [] if attempt is None else [Job.attempts == attempt]
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(allowed), *owned)
        .values(state=to, **extra)
        .execution_options(synchronize_session=False)
    )
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"there is no job #{job_id}")
    if result.rowcount != 1:
        if attempt is not None and (job.attempts != attempt or job.state is JobState.queued):
            raise InvalidTransition(f"job #{job_id} was taken over (attempt {job.attempts}, {job.state.value})")
        raise InvalidTransition(f"job #{job_id} is {job.state.value}; it cannot become {to.value}")
    return job


async def start_job(session: AsyncSession, job_id: int) -> Job:
    return await transition(session, job_id, JobState.running)


async def finish_job(session: AsyncSession, job_id: int, track_id: int, attempt: int | None = None) -> Job:
    return await transition(session, job_id, JobState.done, attempt, track_id=track_id, progress=1.0)


async def fail_job(session: AsyncSession, job_id: int, error: str, attempt: int | None = None) -> Job:
    return await transition(session, job_id, JobState.failed, attempt, error=error[:2000])


async def cancel_job(session: AsyncSession, job_id: int, user: User) -> Job:
    job = await session.get(Job, job_id)
    if job is None or job.user_id != user.id:
        raise NotFound(f"you have no job #{job_id}")
    return await transition(session, job_id, JobState.cancelled)


async def cancel_users_job(session: AsyncSession, job_id: int, platform: str, platform_user_id: str) -> Job:
    """Cancel a job for the chat identity that asked for it (NotFound if it is someone else's)."""
    from .users import get_or_create_user

    return await cancel_job(session, job_id, await get_or_create_user(session, platform, platform_user_id))


async def requeue_job(session: AsyncSession, job_id: int) -> Job:
    return await transition(session, job_id, JobState.queued)


async def set_progress(session: AsyncSession, job_id: int, progress: float) -> None:
    """Progress only moves forward, and only while the job runs."""
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.running, Job.progress < progress)
        .values(progress=min(max(progress, 0.0), 1.0), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def unfinished_jobs(session: AsyncSession, platform: str | None = None) -> list[Job]:
    """Jobs a crash may have left queued or running, oldest first (for recovery on start-up);
    only those asked for on `platform`, when given (a front end re-attaching to its own)."""
    q = select(Job).where(Job.state.in_(UNFINISHED))
    if platform is not None:
        q = q.join(User, User.id == Job.user_id).where(User.platform == Platform(platform))
    return list((await session.execute(q.order_by(Job.id))).scalars())


async def undelivered_jobs(
    session: AsyncSession, platform: str, ended_within: timedelta = timedelta(days=1)
) -> list[Job]:
    """A front end's jobs whose ending its user has not seen: still queued or running, or ended
    (done or failed) within `ended_within` without a delivery receipt; oldest first."""
    ended = and_(
        Job.state.in_((JobState.done, JobState.failed)),
        Job.delivered_at.is_(None),
        Job.finished_at >= utcnow() - ended_within,
    )
    q = (
        select(Job)
        .join(User, User.id == Job.user_id)
        .where(User.platform == Platform(platform), or_(Job.state.in_(UNFINISHED), ended))
    )
    return list((await session.execute(q.order_by(Job.id))).scalars())


async def mark_delivered(session: AsyncSession, job_id: int) -> None:
    """The receipt: the user has seen how the job ended (its track, or why it failed)."""
    job = await session.get(Job, job_id)
    if job is not None and job.delivered_at is None:
        job.delivered_at = utcnow()


async def set_reply_to(session: AsyncSession, job_id: int, reply_to: dict[str, Any]) -> None:
    """Store where the front end shows the job's result (the request's `reply_to`). A chat only
    learns its progress message's id after the job was accepted, so it is added afterwards."""
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"there is no job #{job_id}")
    job.request = {**job.request, "reply_to": reply_to}  # a new dict: the JSON column sees the change
