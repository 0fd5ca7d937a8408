"""What both job backends answer the same way, from the database: which jobs' endings a front end
still has to show its users, and the receipt once it has."""

from __future__ import annotations

from storage import Database
from storage.jobs import mark_delivered, undelivered_jobs

from .api import ComposeRequest, PendingJob


class StoredDeliveries:
    db: Database

    async def undelivered(self, platform: str) -> list[PendingJob]:
        """This platform's jobs whose ending its user has not seen, with their stored requests."""
        jobs = await self.db.run(lambda s: undelivered_jobs(s, platform))
        return [PendingJob(job.id, ComposeRequest.from_json(job.request)) for job in jobs]

    async def delivered(self, job_id: int) -> None:
        await self.db.run(lambda s: mark_delivered(s, job_id))
