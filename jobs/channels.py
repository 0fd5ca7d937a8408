"""Redis pub/sub channel names and event wire format, shared by the Redis backend (the bots' side)
and `melomania worker`, so neither imports the other."""

from __future__ import annotations

import json
from dataclasses import asdict

from .api import JobEvent

CANCEL_CHANNEL = "melomania:cancel"


def job_channel(job_id: int) -> str:
    return f"melomania:job:{job_id}"


def event_json(event: JobEvent) -> str:
    return json.dumps(asdict(event))


def event_from_json(data: str | bytes) -> JobEvent:
    return JobEvent(**json.loads(data))


async def publish(redis, event: JobEvent) -> None:
    await redis.publish(job_channel(event.job_id), event_json(event))
