"""The in-process job runner: events, batching, cancel, restart recovery, idempotency, overload."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import sqlite3
import time

import pytest
from conftest import PIECE, runner_model
from sqlalchemy import func, select

from generator import GeneratorError
from jobs import ComposeRequest, Refused
from jobs.api import Piece
from jobs.inprocess import STORAGE_TROUBLE, InProcessRunner, RunnerSettings
from storage import Database, Job, JobState, LocalArtifactStore, Track
from storage.jobs import create_job, start_job
from storage.tracks import unpack_tokens
from storage.users import get_or_create_user


@pytest.fixture
async def env(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    yield db, store
    await db.dispose()


async def started_runner(db, store, **settings) -> InProcessRunner:
    runner = InProcessRunner(db, store, runner_model, RunnerSettings(**settings))
    await runner.start()
    return runner


def req(user="u1", tokens=40, **kw) -> ComposeRequest:
    return ComposeRequest("telegram", user, kw.pop("genre", "ambient"), tokens=tokens, seed=kw.pop("seed", 1), **kw)


async def collect(runner, job_id, timeout=60.0):
    events = []

    async def go():
        async for e in runner.events(job_id):
            events.append(e)

    await asyncio.wait_for(go(), timeout)
    return events


async def compose_one(db, store, request: ComposeRequest) -> tuple[int, list]:
    """A fresh runner composes `request` to its end: the job id and every event, in order."""
    runner = await started_runner(db, store)
    try:
        job_id = await runner.submit(request)
        return job_id, await collect(runner, job_id)
    finally:
        await runner.stop()


async def count(db, model_, *where) -> int:
    return await db.run(lambda s: s.scalar(select(func.count()).select_from(model_).where(*where)))


async def test_events_arrive_in_order_and_end_with_a_stored_track(env):
    db, store = env
    job_id, events = await compose_one(db, store, req(tokens=120))
    kinds = [e.kind for e in events]
    assert kinds[0] in ("queued", "running") and kinds[-2:] == ["rendering", "done"]
    order = {"queued": 0, "running": 1, "rendering": 2, "done": 3}
    assert [order[k] for k in kinds] == sorted(order[k] for k in kinds)
    dones = [e.done for e in events if e.kind == "running"]
    assert dones == sorted(dones)
    track = await db.run(lambda s: s.get(Track, events[-1].track_id))
    assert track.seed == 1 and store.exists(track.mp3_key) and store.exists(track.png_key)
    job = await db.run(lambda s: s.get(Job, job_id))
    assert job.state is JobState.done and job.track_id == track.id and job.attempts == 1


async def test_requests_arriving_during_a_batch_join_it(env):
    db, store = env
    runner = await started_runner(db, store)
    try:
        first = await runner.submit(req("a", tokens=2000, seed=1))  # seconds of work on this CPU
        async for e in runner.events(first):  # the others arrive once it is composing
            if e.kind == "running" and e.done > 0:
                break
        others = [await runner.submit(req(f"u{i}", tokens=60, seed=i)) for i in range(3)]
        seen_batch = 0
        for _ in range(100):
            seen_batch = max(seen_batch, len(runner.decoder.rows))
            await asyncio.sleep(0.02)
        results = await asyncio.gather(*(collect(runner, j) for j in [first, *others]))
    finally:
        await runner.stop()
    assert seen_batch >= 2
    assert all(r[-1].kind == "done" for r in results)


async def test_a_user_s_second_track_waits_for_their_first_while_others_join(env):
    """One running job per user: a user's second request is held until their first has left the
    batch, while another user's request joins at once."""
    db, store = env
    runner = await started_runner(db, store)
    try:
        first = await runner.submit(req("a", tokens=2000, seed=1))
        async for e in runner.events(first):
            if e.kind == "running" and e.done > 0:
                break
        second = await runner.submit(req("a", tokens=60, seed=2))
        other = await runner.submit(req("b", tokens=60, seed=3))
        composing: set[int] = set()
        while first in {row.tag for row in runner.decoder.rows}:
            composing |= {row.tag for row in runner.decoder.rows}
            await asyncio.sleep(0.005)
        results = await asyncio.gather(*(collect(runner, j) for j in (first, second, other)))
    finally:
        await runner.stop()
    assert other in composing and second not in composing
    assert [r[-1].kind for r in results] == ["done"] * 3


async def test_cancel_stops_a_running_job_within_a_second(env):
    db, store = env
    runner = await started_runner(db, store)
    try:
        job_id = await runner.submit(req(tokens=20000, seconds=None))
        async for e in runner.events(job_id):
            if e.kind == "running" and e.done > 0:
                break
        t0 = time.monotonic()
        assert await runner.cancel(job_id, "telegram", "u1")
        while any(r.tag == job_id for r in runner.decoder.rows):
            assert time.monotonic() - t0 < 1.0
            await asyncio.sleep(0.01)
        assert not await runner.cancel(job_id, "telegram", "u1")  # already over
        assert [e.kind async for e in runner.events(job_id)] == ["cancelled"]
        # Nothing of the job is kept once it has ended, its start's write included.
        await asyncio.sleep(0.1)
        assert job_id not in runner._starts and job_id not in runner._active and job_id not in runner._channels
    finally:
        await runner.stop()
    assert (await db.run(lambda s: s.get(Job, job_id))).state is JobState.cancelled
    assert await count(db, Track) == 0


async def test_someone_else_cannot_cancel_my_job(env):
    db, store = env
    runner = await started_runner(db, store)
    try:
        job_id = await runner.submit(req(tokens=20000, seconds=None))
        with pytest.raises(Exception, match="you have no job"):
            await runner.cancel(job_id, "telegram", "intruder")
        assert await runner.cancel(job_id, "telegram", "u1")
    finally:
        await runner.stop()


async def test_a_restart_resumes_queued_and_interrupted_jobs(env):
    db, store = env

    async def leftovers(s):
        user = await get_or_create_user(s, "telegram", "u1")
        queued, _ = await create_job(s, user, req(tokens=30, seed=5).to_json())
        running, _ = await create_job(s, user, req(tokens=30, seed=6).to_json())
        await start_job(s, running.id)  # the process died while composing this one
        hopeless, _ = await create_job(s, user, req(tokens=30, seed=7).to_json())
        await start_job(s, hopeless.id)
        hopeless.attempts = 3  # it has already brought the composer down three times
        # stored by another version: one no longer reads, one asks for what this one refuses
        garbled, _ = await create_job(s, user, {"platform": "telegram"})
        refused, _ = await create_job(s, user, {**req(tokens=30).to_json(), "genre": "polka"})
        return queued.id, running.id, hopeless.id, garbled.id, refused.id

    queued, running, hopeless, garbled, refused = await db.run(leftovers)
    runner = await started_runner(db, store, max_attempts=3)  # those two must not stop the start
    try:
        results = await asyncio.gather(collect(runner, queued), collect(runner, running))
    finally:
        await runner.stop()
    assert [r[-1].kind for r in results] == ["done", "done"]
    assert (await db.run(lambda s: s.get(Job, running))).attempts == 2
    given_up = await db.run(lambda s: s.get(Job, hopeless))
    assert given_up.state is JobState.failed and "restarted" in given_up.error
    for job_id in (garbled, refused):
        unreadable = await db.run(lambda s, j=job_id: s.get(Job, j))
        assert unreadable.state is JobState.failed and "could not resume" in unreadable.error
    assert await count(db, Track) == 2


async def test_a_bot_process_resumes_only_the_jobs_of_the_chats_it_serves(env):
    """`melomania run telegram` and `run discord` as two processes on one database: each start
    resumes its own chat's jobs and leaves the other's to the process composing them."""
    db, store = env

    async def leftovers(s):
        mine, _ = await create_job(s, await get_or_create_user(s, "telegram", "t1"), req("t1", tokens=30).to_json())
        theirs, _ = await create_job(s, await get_or_create_user(s, "discord", "d1"), req("d1", tokens=30).to_json())
        await start_job(s, theirs.id)  # the Discord process is composing it right now
        return mine.id, theirs.id

    mine, theirs = await db.run(leftovers)
    runner = InProcessRunner(db, store, runner_model, RunnerSettings(), platforms=("telegram",))
    await runner.start()
    try:
        assert [e.kind for e in await collect(runner, mine)][-1] == "done"
    finally:
        await runner.stop()
    left = await db.run(lambda s: s.get(Job, theirs))
    assert left.state is JobState.running and left.attempts == 1 and await count(db, Track) == 1


async def test_undelivered_lists_a_platforms_open_jobs_with_where_their_results_go(env):
    db, store = env
    runner = InProcessRunner(db, store, runner_model)  # never started: what it accepts stays queued
    try:
        mine = await runner.submit(req(reply_to={"chat_id": 5, "message_id": 9}))
        other = await runner.submit(ComposeRequest("discord", "d1", "jazz", tokens=40, reply_to={"channel": 1}))
        cancelled = await runner.submit(req(user="u2"))
        assert await runner.cancel(cancelled, "telegram", "u2")
        pending = await runner.undelivered("telegram")
        assert [(p.job_id, p.request.reply_to) for p in pending] == [(mine, {"chat_id": 5, "message_id": 9})]
        assert [p.job_id for p in await runner.undelivered("discord")] == [other]
    finally:
        await runner.stop()


async def test_a_redelivered_update_composes_once(env):
    db, store = env
    runner = await started_runner(db, store)
    try:
        a = await runner.submit(req(idempotency_key="telegram:update:42"))
        b = await runner.submit(req(idempotency_key="telegram:update:42"))
        assert a == b
        await collect(runner, a)
    finally:
        await runner.stop()
    assert await count(db, Job) == 1 and await count(db, Track) == 1


async def test_bad_values_are_refused_before_anything_is_stored(env):
    db, store = env
    runner = await started_runner(db, store)
    try:
        with pytest.raises(GeneratorError, match=r"temperature must be from 0\.1 to 2"):
            await runner.submit(req(sampling={"temperature": 0}))
        with pytest.raises(GeneratorError, match="unknown genre"):
            await runner.submit(req(genre="polka"))
    finally:
        await runner.stop()
    assert await count(db, Job) == 0


async def test_a_burst_of_500_gets_jobs_or_clear_refusals_and_loses_none(env):
    db, store = env
    runner = await started_runner(db, store, queue_cap=40, per_user=2)
    try:
        outcomes = await asyncio.gather(
            *(runner.submit(req(f"user{i % 300}", tokens=6, seed=i)) for i in range(500)), return_exceptions=True
        )
        accepted = [o for o in outcomes if isinstance(o, int)]
        refused = [o for o in outcomes if isinstance(o, Refused)]
        assert len(accepted) + len(refused) == 500
        assert 0 < len(accepted) <= 40
        assert all("try again in a minute" in str(r) or "on the way" in str(r) for r in refused)
        assert len(runner._active) <= 40  # memory stays bounded by the cap
        results = await asyncio.gather(*(collect(runner, j, timeout=120) for j in accepted))
    finally:
        await runner.stop()
    assert all(r[-1].kind == "done" for r in results)
    assert await count(db, Job) == len(accepted) == await count(db, Track)


def silent_model():
    """A real model whose output layer only ever asks for a time shift: every piece is silence."""
    import torch

    from generator import vocab as V

    m = runner_model()
    with torch.no_grad():
        m.model.Wout.bias.fill_(-50.0)
        m.model.Wout.bias[V.TIME_SHIFT + 49] = 50.0
    return m


async def test_a_silent_piece_is_composed_again_and_never_delivered(env):
    db, store = env
    runner = InProcessRunner(db, store, silent_model, RunnerSettings(max_tries=3))
    await runner.start()
    try:
        job_id = await runner.submit(req(tokens=30))
        events = await collect(runner, job_id)
    finally:
        await runner.stop()
    assert events[-1].kind == "failed" and "only silence" in events[-1].reason
    assert "rendering" not in [e.kind for e in events]
    starts = [e for e in events if e.kind == "running" and e.total == 0]
    assert len(starts) == 3  # composed three times, with new seeds, before giving up
    assert await count(db, Track) == 0


async def test_a_render_only_job_renders_its_piece_as_it_is_and_composes_nothing(env):
    """🎹's job: a stored piece's own tokens rendered on another instrument. The model is never
    asked (this one writes only silence, so any piece it composed would fail), whether the job is
    submitted or resumed after a restart (stored as JSON, as a Redis worker reads it too)."""
    db, store = env
    piece = Piece(PIECE, "an-older-model", "a" * 64)
    rerender = req(genre="calm", seed=99, instrument="organ", lineage="instrument", render=piece)

    async def leftover(s):
        job, _ = await create_job(s, await get_or_create_user(s, "telegram", "u1"), rerender.to_json())
        return job.id

    left = await db.run(leftover)
    runner = InProcessRunner(db, store, silent_model, RunnerSettings())
    await runner.start()  # resumes the leftover
    try:
        submitted = await runner.submit(rerender)
        results = await asyncio.gather(collect(runner, left), collect(runner, submitted))
    finally:
        await runner.stop()
    for events in results:
        kinds = [e.kind for e in events]
        assert kinds[-1] == "done" and set(kinds) <= {"queued", "running", "rendering", "done"}, kinds
        assert all(e.total == 0 for e in events)  # no composing progress: nothing was composed
        track = await db.run(lambda s, e=events[-1]: s.get(Track, e.track_id))
        assert unpack_tokens(track.tokens) == list(PIECE) and track.note_count == 40
        assert (track.instrument, track.lineage, track.seed) == ("organ", "instrument", 99)
        assert (track.model_id, track.checkpoint_sha256) == ("an-older-model", "a" * 64)  # its recipe's composer
        assert store.exists(track.mp3_key) and store.exists(track.png_key)


async def test_a_job_that_ended_unseen_is_listed_until_its_receipt(env):
    """A job that finished or failed while the front end was away is still to be delivered; the
    receipt ends that, and an ending older than a day is not delivered any more."""
    from datetime import timedelta

    from storage.jobs import fail_job
    from storage.models import utcnow

    db, store = env
    runner = await started_runner(db, store)
    try:
        done = await runner.submit(req(reply_to={"chat_id": 5}))
        assert (await collect(runner, done))[-1].kind == "done"
    finally:
        await runner.stop()

    async def failed_job(s):
        user = await get_or_create_user(s, "telegram", "u2")
        job, _ = await create_job(s, user, req(user="u2").to_json())
        await start_job(s, job.id)
        await fail_job(s, job.id, "the composer hit an error")
        return job.id

    failed = await db.run(failed_job)
    assert [p.job_id for p in await runner.undelivered("telegram")] == [done, failed]
    await runner.delivered(done)
    assert [p.job_id for p in await runner.undelivered("telegram")] == [failed]

    async def age(s):
        (await s.get(Job, failed)).finished_at = utcnow() - timedelta(days=2)

    await db.run(age)
    assert await runner.undelivered("telegram") == []


async def test_jobs_compose_with_the_loaded_checkpoints_own_presets(env):
    from dataclasses import replace

    from generator import SamplingParams

    def tuned():
        return replace(runner_model(), presets={"calm": SamplingParams(temperature=0.7)})

    db, store = env
    runner = InProcessRunner(db, store, tuned)
    await runner.start()
    try:
        plain = await runner.submit(req())
        mine = await runner.submit(req(user="u2", sampling={"temperature": 1.3}))
        tracks = []
        for job_id in (plain, mine):  # the two render side by side: either may be stored first
            done = (await collect(runner, job_id))[-1]
            assert done.kind == "done"
            tracks.append(done.track_id)
    finally:
        await runner.stop()
    samplings = [await db.run(lambda s, t=t: s.scalar(select(Track.sampling).where(Track.id == t))) for t in tracks]
    assert [x["temperature"] for x in samplings] == [0.7, 1.3]  # the checkpoint's preset; the user's own


async def test_a_track_that_cannot_be_kept_ends_failed_with_a_reason(env):
    db, store = env
    runner = await started_runner(db, store)
    try:
        shutil.rmtree(store.root)
        store.root.write_text("a file where the artifact folder was")  # every write there fails
        job_id = await runner.submit(req(tokens=60))
        events = await collect(runner, job_id)
    finally:
        await runner.stop()
    assert events[-1].kind == "failed"
    assert "could not keep your track" in events[-1].reason and "ArtifactStoreError" not in events[-1].reason
    assert (await db.run(lambda s: s.get(Job, job_id))).state is JobState.failed
    assert await count(db, Track) == 0


async def test_a_job_still_ends_for_its_user_when_the_database_fails_under_it(env, tmp_path):
    db, store = env
    runner = await started_runner(db, store)

    async def run() -> list:
        job_id = await runner.submit(req(tokens=3000))
        events = runner.events(job_id)
        while (await anext(events)).kind != "running":
            pass
        with contextlib.closing(sqlite3.connect(tmp_path / "jobs.db", timeout=10)) as conn:
            conn.executescript("DROP TABLE tracks; DROP TABLE jobs;")  # neither the track nor the failure can be stored
        return [e async for e in events]

    try:
        rest = await asyncio.wait_for(run(), 60)
    finally:
        await runner.stop()
    assert rest[-1].kind == "failed"  # told, not left waiting
    assert rest[-1].reason == STORAGE_TROUBLE  # and not with the database's own words


async def test_a_job_cancelled_before_a_worker_adopts_it_ends_at_once(env):
    """The Redis worker's race: the cancel arrives between reading the job as queued and handing
    it to the runner. The job must end as cancelled, not sit unseen holding a worker's slot."""
    db, store = env
    runner = await started_runner(db, store)
    try:
        alice = await db.run(lambda s: get_or_create_user(s, "telegram", "alice"))
        job, _ = await db.run(lambda s: create_job(s, alice, {"genre": "calm"}))
        runner.mark_cancelled(job.id)
        events = await asyncio.wait_for(_all(runner.adopt(job.id, req("alice", tokens=40))), 10)
    finally:
        await runner.stop()
    assert [e.kind for e in events][-1] == "cancelled"


async def test_cancels_for_jobs_held_elsewhere_are_forgotten_in_time(env, monkeypatch):
    """A Redis worker hears every cancel in the fleet: it keeps them only as long as a job read
    as queued could take to reach it, so its memory does not grow with the fleet's history."""
    import jobs.inprocess

    db, store = env
    runner = await started_runner(db, store)
    try:
        for job_id in range(1000, 1100):
            runner.mark_cancelled(job_id)
        assert len(runner._cancelled) == 100
        monkeypatch.setattr(jobs.inprocess, "CANCEL_MEMORY_S", 0.0)
        runner.mark_cancelled(5000)
        assert list(runner._cancelled) == [5000]
    finally:
        await runner.stop()


async def _all(events):
    return [e async for e in events]


async def test_the_model_loads_on_the_thread_that_composes_with_it(env):
    """Torch keeps an OpenMP team per thread that runs ops; loading on a helper thread left a
    second team that slowed every multi-threaded step of the generation thread."""
    import threading

    db, store = env
    loaded_on = []

    def loader():
        loaded_on.append(threading.current_thread().name)
        return runner_model()

    runner = InProcessRunner(db, store, loader)
    await runner.start()
    try:
        job_id = await runner.submit(req())
        assert (await collect(runner, job_id))[-1].kind == "done"
    finally:
        await runner.stop()
    assert loaded_on == ["generation"]


async def test_a_model_that_cannot_load_stops_the_start_with_its_error(env):
    db, store = env

    def loader():
        raise GeneratorError("no checkpoint at /nowhere.pt")

    runner = InProcessRunner(db, store, loader)
    with pytest.raises(GeneratorError, match=r"no checkpoint at /nowhere\.pt"):
        await runner.start()
    await runner.stop()


def render_processes() -> list[int]:
    """Our multiprocessing children (render processes), not the resource tracker or ffmpeg."""
    import os
    from pathlib import Path

    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            children += (task / "children").read_text().split()
    found = []
    for pid in children:
        with contextlib.suppress(FileNotFoundError):  # one that ended meanwhile
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
    return found


async def test_a_render_process_killed_mid_render_still_yields_exactly_one_track(env, caplog, tmp_path, monkeypatch):
    import os
    import signal

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # before start(): the render processes take it when they start
    db, store = env
    runner = await started_runner(db, store)
    try:
        job_id = await runner.submit(req(tokens=600))
        killed: list[int] = []
        async for event in runner.events(job_id):
            if event.kind == "rendering" and not killed:
                await asyncio.sleep(0.05)  # the track is on its way to a render process
                killed = render_processes()
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
            if event.terminal:
                break
    finally:
        await runner.stop()
    assert killed and event.kind == "done"
    assert "a render process died" in caplog.text  # the track was rendered again, not by luck
    assert await count(db, Track) == 1
    track = await db.run(lambda s: s.get(Track, event.track_id))
    assert store.exists(track.mp3_key)
    assert not set(killed) & set(render_processes())
    # The killed processes' temporary files went with the processes that replaced them, and
    # theirs as they ended (the last one ends just after stop() returns).
    for _ in range(100):
        if not list(scratch.iterdir()):
            break
        await asyncio.sleep(0.05)
    assert not list(scratch.iterdir())


def test_only_scratch_whose_render_process_is_gone_is_removed(tmp_path):
    import fcntl
    import os

    from jobs.render_pool import SCRATCH_LOCK, SCRATCH_PREFIX, remove_abandoned_scratch

    alive, gone, elsewhere = tmp_path / f"{SCRATCH_PREFIX}1-a", tmp_path / f"{SCRATCH_PREFIX}2-b", tmp_path / "x"
    for d in (alive, gone, elsewhere):
        d.mkdir()
        (d / SCRATCH_LOCK).touch()
        (d / "in.mid").write_bytes(b"MThd")
    link = tmp_path / f"{SCRATCH_PREFIX}3-c"
    link.symlink_to(elsewhere)  # a name like ours, leading to a directory that is not
    held = os.open(alive / SCRATCH_LOCK, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as its living process holds it
    try:
        assert remove_abandoned_scratch(tmp_path) == [gone]
    finally:
        os.close(held)
    assert alive.exists() and not gone.exists() and (elsewhere / "in.mid").exists() and link.is_symlink()


def test_a_small_model_decodes_on_one_thread_and_a_large_one_on_every_core():
    import torch

    from generator.decoding import decoding_threads

    assert decoding_threads(runner_model().model, cores=2) == 1
    assert decoding_threads(torch.nn.Linear(5000, 5000, device="meta"), cores=8) == 8  # 25 M parameters


async def test_a_full_disk_where_tracks_are_rendered_fails_the_job_saying_so(env, tiny_disk, monkeypatch):
    """Rendering happens in processes of their own; a full disk there still reaches the user as
    one, not as a vague failure, and the job ends instead of vanishing."""
    monkeypatch.setenv("TMPDIR", str(tiny_disk))  # before start(): the render processes take it when they start
    db, store = env
    job_id, events = await compose_one(db, store, req(tokens=400))
    assert events[-1].kind == "failed" and "full disk" in events[-1].reason
    job = await db.run(lambda s: s.get(Job, job_id))
    assert job.state is JobState.failed and await count(db, Track) == 0


def test_render_processes_die_with_a_process_killed_outright(tmp_path):
    """A worker the OOM killer takes gets no chance to stop its render processes; they must not
    stay behind, idle, each holding a soundfont."""
    import select
    import subprocess
    import sys
    from pathlib import Path

    code = """
import asyncio, os
from jobs.render_pool import RenderPool
async def main():
    pool = RenderPool(2)
    await asyncio.gather(*(asyncio.wrap_future(f) for f in pool.warm_up()))
    print(*[p for t in os.listdir("/proc/self/task") for p in open(f"/proc/self/task/{t}/children").read().split()])
    await asyncio.sleep(60)
asyncio.run(main())
"""

    def running(pid: int) -> bool:  # a zombie is dead, only not yet reaped by whoever adopted it
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    root = Path(__file__).parents[1]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        children = [int(p) for p in proc.stdout.readline().split()] if ready else []
        assert children and all(map(running, children))  # the render processes and multiprocessing's tracker
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(running, children)):
        time.sleep(0.1)
    assert not [p for p in children if running(p)]


async def test_a_job_another_worker_started_again_is_let_go_without_a_word(env):
    """A Redis worker whose claim lapsed (Redis unreachable for a while) goes on composing while
    another worker starts the job again: the first can no longer end it, and tells no one."""
    from storage.jobs import requeue_job

    db, store = env
    runner = await started_runner(db, store)
    try:
        alice = await db.run(lambda s: get_or_create_user(s, "telegram", "alice"))
        job, _ = await db.run(lambda s: create_job(s, alice, req("alice").to_json()))
        events = []
        followed = None
        async for event in runner.adopt(job.id, req("alice", tokens=400)):
            events.append(event)
            if len(events) == 1:
                followed = asyncio.create_task(_all(runner.events(job.id)))  # as a front end follows it
                while (await db.run(lambda s: s.get(Job, job.id))).attempts != 1:  # our start is stored
                    await asyncio.sleep(0.01)
                await db.run(lambda s: requeue_job(s, job.id))  # the other worker takes it over
                await db.run(lambda s: start_job(s, job.id))
        assert events[-1].kind == "released" and not [e for e in events if e.kind in ("done", "failed")]
        assert not any(e.terminal for e in await followed)  # a front end sees no ending, "released" neither
        stored = await db.run(lambda s: s.get(Job, job.id))
        assert stored.state is JobState.running and stored.attempts == 2 and await count(db, Track) == 0
        # The other worker dies in turn, and Redis hands the job back: composed here after all.
        await db.run(lambda s: requeue_job(s, job.id))
        again = await asyncio.wait_for(_all(runner.adopt(job.id, req("alice", tokens=60))), 60)
    finally:
        await runner.stop()
    assert again[-1].kind == "done" and await count(db, Track) == 1
    assert (await db.run(lambda s: s.get(Job, job.id))).attempts == 3


async def test_the_arrangement_is_settled_when_admitted_and_kept_with_the_track(env):
    """A request without one plays its genre's (ambient: band); the settled choice is stored with
    the job, names the track's arrangement and its recipe, and the MIDI holds one track per part."""
    import io

    import mido

    db, store = env
    piece = Piece(PIECE, "m", "a" * 64)
    runner = InProcessRunner(db, store, silent_model, RunnerSettings())
    await runner.start()
    try:
        asked = [
            req(user, genre="calm", render=piece, lineage="instrument", arrangement=arrangement)
            for user, arrangement in (("u1", None), ("u2", "solo"))
        ]
        ids = [await runner.submit(r) for r in asked]
        results = await asyncio.gather(*(collect(runner, i) for i in ids))
    finally:
        await runner.stop()
    tracks = [await db.run(lambda s, e=events[-1]: s.get(Track, e.track_id)) for events in results]
    jobs = [await db.run(lambda s, i=i: s.get(Job, i)) for i in ids]
    assert [t.arrangement for t in tracks] == ["band", "solo"]
    assert [j.request["arrangement"] for j in jobs] == ["band", "solo"]
    parts = [[t.name for t in mido.MidiFile(file=io.BytesIO(store.get(t.midi_key))).tracks] for t in tracks]
    assert {"Piano", "Pad", "Drone"} <= set(parts[0]) and "Pad" not in parts[1]


async def until_logged(caplog, logger: str, words: str, after: int = 0, timeout: float = 60.0) -> int:
    """Wait until a record of `logger` holding `words` is among the records past the first `after`;
    returns how many records there are then."""
    for _ in range(int(timeout / 0.05)):
        records = caplog.records
        if any(r.name == logger and words in r.getMessage() for r in records[after:]):
            return len(records)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{logger} never logged {words!r}")


@contextlib.contextmanager
def unhandled_task_errors():
    """What the event loop reports of tasks nobody awaited ("Task exception was never retrieved")."""
    loop, seen = asyncio.get_running_loop(), []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        gc.collect()  # a dropped task reports its exception when it is collected
        loop.set_exception_handler(previous)


async def test_a_job_in_flight_across_a_postgres_restart_ends_once_done(own_postgres, tmp_path, caplog):
    """PostgreSQL goes down as in a crash while a job composes and comes back only after the job
    tried to store its track: the job's writes wait it out, and the job ends once, done."""
    caplog.set_level(logging.WARNING)
    db = Database(own_postgres.url)
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    runner = await started_runner(db, store, progress_interval_s=0.05)
    try:
        with unhandled_task_errors() as unhandled:
            job_id = await runner.submit(req(tokens=400))
            events = runner.events(job_id)
            await stored_as_running(db, job_id)
            await asyncio.to_thread(own_postgres.stop)  # -m immediate
            while (await anext(events)).kind != "rendering":
                pass
            seen = len(caplog.records)
            await until_logged(caplog, "storage.db", "database unavailable", after=seen)  # storing the track
            await asyncio.to_thread(own_postgres.start)
            rest = await asyncio.wait_for(collect_rest(events), 60)
    finally:
        await runner.stop()
    endings = [e for e in rest if e.terminal]
    assert [e.kind for e in endings] == ["done"]
    job = await db.run(lambda s: s.get(Job, job_id))
    assert job.state is JobState.done and job.attempts == 1 and job.track_id == endings[0].track_id
    assert await count(db, Track) == 1
    assert unhandled == []
    await db.dispose()


async def test_progress_lost_to_a_database_outage_neither_fails_nor_loses_the_job(own_postgres, tmp_path, caplog):
    """With a short bound, the progress written while PostgreSQL is down is given up on: logged,
    never left as an exception nobody retrieves, and the job goes on to its track."""
    caplog.set_level(logging.WARNING)
    db = Database(own_postgres.url, retry_for_s=0.5)
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    runner = await started_runner(db, store, progress_interval_s=0.05)
    try:
        with unhandled_task_errors() as unhandled:
            job_id = await runner.submit(req(tokens=3000))
            events = runner.events(job_id)
            await stored_as_running(db, job_id)
            await asyncio.to_thread(own_postgres.stop)
            await until_logged(caplog, "storage.db", "database unavailable after")  # a progress write given up
            await asyncio.to_thread(own_postgres.start)
            rest = await asyncio.wait_for(collect_rest(events), 120)
    finally:
        await runner.stop()
    assert [e.kind for e in rest if e.terminal] == ["done"]
    assert (await db.run(lambda s: s.get(Job, job_id))).state is JobState.done
    assert unhandled == []
    assert any(r.name == "jobs.inprocess" and "progress not stored" in r.getMessage() for r in caplog.records)
    await db.dispose()


async def collect_rest(events) -> list:
    return [e async for e in events]


async def stored_as_running(db, job_id: int) -> None:
    """Wait until the job's start is stored (an outage before it is another story: the job cannot
    end as done without it)."""
    for _ in range(600):
        if (await db.run(lambda s: s.get(Job, job_id))).state is JobState.running:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never stored as running")
