"""Saving a finished track: files first, then one transaction for the row that points at them.

If the files cannot be stored (a full disk), nothing is recorded; if the database write fails,
the files are unreferenced content-addressed blobs that retention clears, never rows without files.
A track composed for a job is recorded in the same transaction that finishes the job, so a worker
dying in between cannot leave a track no job points at (and a retry would not add a second one).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from .artifacts import ArtifactStore
from .db import Database
from .jobs import finish_job
from .models import Platform, Track
from .tracks import NewTrack, record_track
from .users import get_or_create_user


async def save_track(
    db: Database,
    store: ArtifactStore,
    platform: Platform | str,
    platform_user_id: str | int,
    new: NewTrack,
    mp3: bytes,
    midi: bytes,
    png: bytes,
    job_id: int | None = None,
    attempt: int | None = None,
) -> Track:
    """Store the files, then record the track (and finish `job_id` with it, atomically; a job
    that was cancelled or finished meanwhile, or started again since `attempt`, raises
    InvalidTransition and nothing is recorded)."""
    keys = {}
    for ext, data in (("mp3", mp3), ("mid", midi), ("png", png)):
        keys[ext] = await asyncio.to_thread(store.put, data, ext)
    new = replace(new, mp3_key=keys["mp3"], midi_key=keys["mid"], png_key=keys["png"])

    async def record(session):
        owner = await get_or_create_user(session, platform, platform_user_id)
        track = await record_track(session, owner, new)
        if job_id is not None:
            await finish_job(session, job_id, track.id, attempt)
        return track

    return await db.run(record)
