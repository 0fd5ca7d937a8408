"""Scale-out over a real redis-server: bots enqueue, `melomania worker` processes compose."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import PIECE, tiny_model
from servers import RedisServer, redis_server
from sqlalchemy import func, select

from generator import save_checkpoint
from jobs import ComposeRequest
from jobs.api import Piece, Refused
from jobs.redis_backend import RedisBackend
from storage import Database, Job, JobState, Track
from storage.tracks import unpack_tokens


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture
async def setup(tmp_path, redis_url):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(tiny_model(max_len=256), ckpt)
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    db = Database(db_url)
    await db.create_all()
    env = {
        **os.environ,
        "MELOMANIA_CHECKPOINT": str(ckpt),
        "MELOMANIA_DATABASE_URL": db_url,
        "MELOMANIA_DATA_DIR": str(tmp_path / "data"),
        "MELOMANIA_REDIS_URL": redis_url,
        "MELOMANIA_WORKER_HEARTBEAT_S": "0.5",
        "MELOMANIA_THREADS": "1",
    }
    import redis.asyncio as aioredis

    flush = aioredis.from_url(redis_url)
    await flush.flushall()
    await flush.aclose()
    backend = RedisBackend(db, redis_url)
    await backend.start()
    workers: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        log = tmp_path / f"worker{len(workers)}.log"
        with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "melomania.cli", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=fh
            )
        workers.append(proc)
        return proc

    yield db, backend, start_worker
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    await backend.stop()
    await db.dispose()


def req(user="u1", tokens=60, **kw) -> ComposeRequest:
    return ComposeRequest("discord", user, kw.pop("genre", "jazz"), tokens=tokens, seed=kw.pop("seed", 3), **kw)


async def collect(backend, job_id, timeout=90.0):
    events = []

    async def go():
        async for e in backend.events(job_id):
            events.append(e)

    await asyncio.wait_for(go(), timeout)
    return events


async def count(db, model, *where) -> int:
    return await db.run(lambda s: s.scalar(select(func.count()).select_from(model).where(*where)))


async def test_a_worker_composes_and_progress_arrives_in_order(setup):
    db, backend, start_worker = setup
    start_worker()
    job_id = await backend.submit(req(tokens=150))
    events = await collect(backend, job_id)
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["rendering", "done"]
    order = {"queued": 0, "running": 1, "rendering": 2, "done": 3}
    assert [order[k] for k in kinds] == sorted(order[k] for k in kinds)
    dones = [e.done for e in events if e.kind == "running"]
    assert dones == sorted(dones)
    job = await db.run(lambda s: s.get(Job, job_id))
    assert job.state is JobState.done and job.track_id == events[-1].track_id


async def test_a_worker_renders_a_render_only_job_as_it_is_without_composing(setup):
    """🎹's job through Redis: the worker renders the piece it carries (its random model would have
    composed other notes), and the recipe names the piece's own composer."""
    db, backend, start_worker = setup
    start_worker()
    piece = Piece(PIECE, "an-older-model", "a" * 64)
    job_id = await backend.submit(req(genre="calm", seed=99, instrument="organ", lineage="instrument", render=piece))
    events = await collect(backend, job_id)
    assert events[-1].kind == "done" and all(e.total == 0 for e in events)  # no composing progress
    track = await db.run(lambda s: s.get(Track, events[-1].track_id))
    assert unpack_tokens(track.tokens) == list(PIECE) and (track.instrument, track.seed) == ("organ", 99)
    assert track.model_id == "an-older-model" and track.lineage == "instrument"


async def test_killing_a_worker_mid_job_still_yields_exactly_one_result(setup):
    db, backend, start_worker = setup
    first = start_worker()
    job_id = await backend.submit(req(tokens=4000, seed=9))
    listener = asyncio.create_task(collect(backend, job_id, timeout=120))
    while (await db.run(lambda s: s.get(Job, job_id))).state is not JobState.running:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    first.kill()  # SIGKILL: no clean-up at all
    start_worker()
    events = await listener
    assert [e.kind for e in events].count("done") == 1
    job = await db.run(lambda s: s.get(Job, job_id))
    assert job.state is JobState.done and job.attempts == 2
    assert await count(db, Track) == 1


async def test_jobs_queued_while_no_worker_runs_are_composed_when_one_starts(setup):
    db, backend, start_worker = setup
    jobs = [await backend.submit(req(f"user{i}", tokens=40, seed=i)) for i in range(3)]
    await asyncio.sleep(0.5)
    for j in jobs:
        assert (await db.run(lambda s, j=j: s.get(Job, j))).state is JobState.queued
    start_worker()
    results = await asyncio.gather(*(collect(backend, j) for j in jobs))
    assert [r[-1].kind for r in results] == ["done"] * 3


async def test_cancel_reaches_the_worker_and_it_stops(setup):
    db, backend, start_worker = setup
    start_worker()
    job_id = await backend.submit(req(tokens=20000, seed=4))
    while (await db.run(lambda s: s.get(Job, job_id))).progress <= 0:
        await asyncio.sleep(0.1)
    assert await backend.cancel(job_id, "discord", "u1")
    t0 = time.monotonic()
    await asyncio.sleep(1.0)
    before = (await db.run(lambda s: s.get(Job, job_id))).progress
    await asyncio.sleep(2.0)
    after = await db.run(lambda s: s.get(Job, job_id))
    assert after.state is JobState.cancelled and after.progress == before  # nothing written since
    assert time.monotonic() - t0 < 5
    assert [e.kind async for e in backend.events(job_id)] == ["cancelled"]
    assert await count(db, Track) == 0


async def test_undelivered_lists_a_platforms_jobs_while_no_worker_runs(setup):
    _db, backend, _start_worker = setup
    job_id = await backend.submit(req(reply_to={"channel_id": 7, "message_id": 8}))
    await backend.submit(ComposeRequest("telegram", "t1", "pop", tokens=40, seed=1))
    [pending] = await backend.undelivered("discord")
    assert pending.job_id == job_id and pending.request.reply_to == {"channel_id": 7, "message_id": 8}
    assert pending.request.genre == "jazz" and [p.request.user_id for p in await backend.undelivered("telegram")] == [
        "t1"
    ]


async def test_a_job_the_worker_cannot_compose_ends_failed_for_its_user(setup):
    db, backend, start_worker = setup
    job_id = await backend.submit(req())

    async def garble(s):
        job = await s.get(Job, job_id)
        job.request = {"platform": "discord"}  # say, written by an incompatible older version

    await db.run(garble)
    start_worker()
    events = await collect(backend, job_id)
    assert events[-1].kind == "failed" and "please try again" in events[-1].reason
    assert (await db.run(lambda s: s.get(Job, job_id))).state is JobState.failed


async def test_an_ending_stored_by_a_worker_that_died_before_telling_still_reaches_the_user(setup):
    """A worker stored the job's failure and died before publishing it: the user's bot is still
    listening, and the worker that gets the job next tells it how the job ended."""
    from storage.jobs import fail_job, start_job

    db, backend, start_worker = setup
    job_id = await backend.submit(req())
    await db.run(lambda s: start_job(s, job_id))  # the first worker took it...
    listener = asyncio.create_task(collect(backend, job_id, timeout=60))
    await asyncio.sleep(0.5)
    await db.run(lambda s: fail_job(s, job_id, "the composer hit an error; please try again"))  # ...and died here
    start_worker()
    events = await listener
    assert [e.kind for e in events] == ["running", "failed"] and "please try again" in events[-1].reason


async def test_a_worker_still_hears_cancels_after_its_connection_to_redis_drops(setup, redis_url):
    import redis.asyncio as aioredis
    from arq.constants import result_key_prefix

    from jobs.redis_backend import arq_job_id

    db, backend, start_worker = setup
    start_worker()
    job_id = await backend.submit(req(tokens=100_000, seed=5))
    while (await db.run(lambda s: s.get(Job, job_id))).progress <= 0:
        await asyncio.sleep(0.1)
    admin = aioredis.from_url(redis_url)
    try:
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1  # the worker's cancel channel
        await asyncio.sleep(2.0)  # it listens again within a second
        assert await backend.cancel(job_id, "discord", "u1")
        t0 = time.monotonic()
        while not await admin.exists(result_key_prefix + arq_job_id(job_id)):  # compose() returned
            assert time.monotonic() - t0 < 5, "the worker went on composing a cancelled job"
            await asyncio.sleep(0.1)
    finally:
        await admin.aclose()
    assert await count(db, Track) == 0


async def test_a_job_claimed_by_a_worker_killed_before_its_first_heartbeat_is_composed_soon(setup, redis_url):
    """arq claims a job for its whole timeout (an hour); a worker killed before its heartbeat
    shortened that claim must not keep the job from every other worker for the hour
    (bench/faults.py, kill-worker)."""
    import redis.asyncio as aioredis
    from arq.constants import in_progress_key_prefix

    from jobs.redis_backend import arq_job_id
    from jobs.worker import JOB_TIMEOUT_S

    _db, backend, start_worker = setup
    job_id = await backend.submit(req(tokens=40))
    admin = aioredis.from_url(redis_url)
    await admin.psetex(in_progress_key_prefix + arq_job_id(job_id), (JOB_TIMEOUT_S + 10) * 1000, b"1")  # as arq claims
    await admin.aclose()
    start_worker()
    assert (await collect(backend, job_id, timeout=60))[-1].kind == "done"


async def test_a_bot_following_a_job_while_redis_restarts_is_still_told_how_it_ended(tmp_path):
    """redis-server restarting drops every follower's subscription, and an ending published
    meanwhile is gone: the follower subscribes again and reads the stored ending, rather than
    breaking off and leaving its user waiting until the bot restarts (bench/faults.py)."""
    from storage.jobs import fail_job, start_job

    server = RedisServer()
    server.start()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.create_all()
    backend = RedisBackend(db, server.url)
    await backend.start()
    try:
        job_id = await backend.submit(req())
        events = backend.events(job_id)
        assert (await anext(events)).kind == "queued"
        server.halt()
        await db.run(lambda s: start_job(s, job_id))  # a worker composed it while Redis was away,
        await db.run(lambda s: fail_job(s, job_id, "the composer hit an error; please try again"))
        ending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.0)  # the follower finds Redis gone, and tries again
        server.start()
        ending = await asyncio.wait_for(ending, 30)
        assert ending.kind == "failed" and ending.reason == "the composer hit an error; please try again"
        await events.aclose()
    finally:
        await backend.stop()
        await db.dispose()
        server.stop()


async def test_a_job_redis_cannot_take_is_refused_and_never_composed_later(setup, redis_url):
    """Redis refusing writes (its memory full): the user is told to try again, and the job they
    were told about does not come back as a track at the next start."""
    import redis.asyncio as aioredis

    from jobs import Refused

    db, backend, _start_worker = setup
    admin = aioredis.from_url(redis_url)
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    try:
        with pytest.raises(Refused, match="try again in a minute"):
            await backend.submit(req())
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()
    [job] = await db.run(lambda s: s.scalars(select(Job)))
    assert job.state is JobState.failed  # a restart queues the unfinished jobs: not this one
    assert (await backend.submit(req(seed=8))) != job.id  # and its slot is free: the user may ask again


async def test_a_job_whose_workers_kept_dying_before_it_started_is_failed_for_its_user(setup, redis_url):
    """Its last worker died before the start was stored: the job is still queued when arq hands
    it out the last time, and that try tells the user instead of leaving it queued for ever."""
    from arq import create_pool
    from arq.connections import RedisSettings

    from jobs.worker import MAX_TRIES, compose

    db, backend, _start_worker = setup
    job_id = await backend.submit(req())
    listener = asyncio.create_task(collect(backend, job_id, timeout=30))
    await asyncio.sleep(0.3)
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        ctx = {"db": db, "redis": redis, "job_try": MAX_TRIES + 1, "job_id": f"compose:{job_id}"}
        assert await compose(ctx, job_id) == "failed"
    finally:
        await redis.aclose()
    events = await listener
    assert events[-1].kind == "failed" and "several times" in events[-1].reason
    assert (await db.run(lambda s: s.get(Job, job_id))).state is JobState.failed


async def test_worker_check_says_whether_a_worker_is_alive(setup, redis_url):
    """`melomania worker --check`, a container's health check: 1 while no worker runs, 0 once one
    has started, 1 again once it has stopped (arq's health key expires)."""
    import asyncio

    _, _, start_worker = setup
    env = {**os.environ, "MELOMANIA_REDIS_URL": redis_url}

    def check() -> int:
        return subprocess.run([sys.executable, "-m", "melomania.cli", "worker", "--check"], env=env).returncode

    assert check() == 1
    proc = start_worker()
    for _ in range(120):
        if check() == 0:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("the worker never reported itself alive")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert check() == 1  # arq deletes its health key on a clean shutdown


async def test_a_group_is_stored_together_or_refused_whole_with_the_caps_counted_across_bots(setup):
    db, backend, _start_worker = setup
    group = [req(seed=s, idempotency_key=f"discord:9#{n}") for n, s in enumerate((1, 2, 3), 1)]
    ids = await backend.submit_all(group)
    assert len(set(ids)) == 3 and await backend.submit_all(group) == ids  # a redelivery: the same jobs
    with pytest.raises(Refused, match="that's 2 tracks at once, but you may have 4 on the way and already have 3"):
        await backend.submit_all(
            [req(seed=4, idempotency_key="discord:10#1"), req(seed=5, idempotency_key="discord:10#2")]
        )
    assert await count(db, Job) == 3  # nothing of the refused group was stored
    assert [p.job_id for p in await backend.undelivered("discord")] == ids


async def test_jobs_a_crashed_redis_forgot_are_composed_without_a_bot_restart(tmp_path):
    """Redis SIGKILLed with jobs queued comes back empty (no snapshot had them); PostgreSQL (here
    SQLite) still holds them: a worker enqueues them again on its own (bench/faults.py crash-redis)."""
    server = RedisServer()
    server.start()
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(tiny_model(max_len=256), ckpt)
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    db = Database(db_url)
    await db.create_all()
    backend = RedisBackend(db, server.url)
    await backend.start()
    worker = None
    try:
        jobs = [await backend.submit(req(f"user{i}", tokens=40, seed=i)) for i in range(2)]
        server.halt(crash=True)
        server.start()  # empty: this server keeps no snapshot
        env = {
            **os.environ,
            "MELOMANIA_CHECKPOINT": str(ckpt),
            "MELOMANIA_DATABASE_URL": db_url,
            "MELOMANIA_DATA_DIR": str(tmp_path / "data"),
            "MELOMANIA_REDIS_URL": server.url,
            "MELOMANIA_THREADS": "1",
        }
        worker = subprocess.Popen([sys.executable, "-m", "melomania.cli", "worker"], env=env, stdout=subprocess.DEVNULL)
        results = await asyncio.gather(*(collect(backend, j) for j in jobs))
        assert [r[-1].kind for r in results] == ["done"] * 2
        assert await count(db, Track) == 2
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(10)
        await backend.stop()
        await db.dispose()
        server.stop()
