"""Storage on SQLite and on a real PostgreSQL server: every test runs on both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from storage import (
    ArtifactStoreError,
    Database,
    Favorite,
    Forbidden,
    InvalidTransition,
    Job,
    JobState,
    LocalArtifactStore,
    NotFound,
    Share,
    StorageUnavailable,
    Track,
    TrackStatus,
    User,
)
from storage.favorites import add_favorite, is_favorite, list_favorites, remove_favorite
from storage.ingest import save_track
from storage.jobs import cancel_job, create_job, fail_job, finish_job, requeue_job, set_progress, start_job
from storage.models import utcnow
from storage.privacy import expire_artifacts, forget_user
from storage.shares import channel_shares, record_share
from storage.tracks import NewTrack, cache_file_id, get_track, history, record_track, unpack_tokens
from storage.users import get_or_create_user, set_defaults

SAMPLING = {"temperature": 0.9, "top_k": 40, "top_p": 0.99, "at_least_k": 1, "rp_penalty": 0.05}


def new_track(seed: int = 1, **kw) -> NewTrack:
    return NewTrack(
        genre="calm",
        model_id="melomania-small",
        checkpoint_sha256="ab" * 32,
        seed=seed,
        sampling=SAMPLING,
        tokens=[392, 256 + 20, 60, 300, 188],
        max_seconds=30.0,
        **kw,
    )


async def user(db, uid: str = "alice") -> User:
    return await db.run(lambda s: get_or_create_user(s, "telegram", uid, uid.title()))


async def track_of(db, owner: str = "alice", **kw) -> Track:
    async def go(s):
        return await record_track(s, await get_or_create_user(s, "telegram", owner), new_track(**kw))

    return await db.run(go)


async def count(db, model) -> int:
    return await db.run(lambda s: s.scalar(select(func.count()).select_from(model)))


async def test_track_keeps_the_full_recipe_and_exact_tokens(db):
    t = await track_of(db, seed=42, primer_ref="primer.mid", instrument="strings")
    alice = await user(db)
    again = await db.run(lambda s: get_track(s, t.id, alice))
    assert (again.seed, again.sampling, again.instrument, again.primer_ref) == (42, SAMPLING, "strings", "primer.mid")
    assert unpack_tokens(again.tokens) == [392, 276, 60, 300, 188]
    assert again.status is TrackStatus.ready


async def test_users_are_unique_per_platform_identity_and_keep_their_defaults(db):
    a1, a2 = await user(db, "alice"), await user(db, "alice")
    assert a1.id == a2.id
    other = await db.run(lambda s: get_or_create_user(s, "discord", "alice"))
    assert other.id != a1.id

    async def defaults(s):
        u = await get_or_create_user(s, "telegram", "alice")
        await set_defaults(s, u, genre="jazz", temperature=1.1)
        return u

    await db.run(defaults)
    assert (await user(db)).default_genre == "jazz"


async def test_history_is_newest_first_and_pages_by_keyset(db):
    ids = [(await track_of(db, seed=i)).id for i in range(7)]
    await track_of(db, owner="bob")
    alice = await user(db)
    page1 = await db.run(lambda s: history(s, alice, limit=3))
    page2 = await db.run(lambda s: history(s, alice, limit=3, before=page1.next_before))
    page3 = await db.run(lambda s: history(s, alice, limit=3, before=page2.next_before))
    assert [t.id for t in page1.items + page2.items + page3.items] == ids[::-1]
    assert page3.next_before is None


async def test_unknown_and_someone_elses_track(db):
    mine, bobs = await track_of(db), await track_of(db, owner="bob")
    alice = await user(db)
    with pytest.raises(NotFound, match="there is no track #999999") as missing:
        await db.run(lambda s: get_track(s, 999999, alice))
    with pytest.raises(Forbidden) as theirs:
        await db.run(lambda s: get_track(s, bobs.id, alice))
    assert str(theirs.value) == str(missing.value).replace("999999", str(bobs.id))  # no telling which exist
    with pytest.raises(Forbidden):
        await db.run(lambda s: add_favorite(s, alice, bobs.id))
    assert (await db.run(lambda s: get_track(s, mine.id, alice))).id == mine.id


async def test_favourites_are_idempotent_and_private(db):
    t = await track_of(db)
    alice, bob = await user(db), await user(db, "bob")
    assert await db.run(lambda s: add_favorite(s, alice, t.id)) is True
    assert await db.run(lambda s: add_favorite(s, alice, t.id)) is False  # a duplicate changes nothing
    assert await count(db, Favorite) == 1
    assert await db.run(lambda s: remove_favorite(s, bob, t.id)) is False  # bob cannot touch alice's
    assert await db.run(lambda s: is_favorite(s, alice, t.id))
    page = await db.run(lambda s: list_favorites(s, alice))
    assert [x.id for x in page.items] == [t.id]
    assert await db.run(lambda s: remove_favorite(s, alice, t.id)) is True
    assert await db.run(lambda s: remove_favorite(s, alice, t.id)) is False


async def test_a_shared_track_is_readable_by_anyone_in_that_channel(db):
    t = await track_of(db)
    alice, bob = await user(db), await user(db, "bob")
    channel = ("telegram", "-100123")
    share = await db.run(lambda s: record_share(s, alice, t.id, channel, message_id=77))
    again = await db.run(lambda s: record_share(s, alice, t.id, channel, message_id=78))
    assert share.id == again.id and again.message_id == "78"
    assert (await db.run(lambda s: get_track(s, t.id, bob, channel))).id == t.id
    with pytest.raises(Forbidden):
        await db.run(lambda s: get_track(s, t.id, bob, ("telegram", "-100999")))
    assert await db.run(lambda s: add_favorite(s, bob, t.id, channel)) is True
    with pytest.raises(Forbidden):  # bob cannot share alice's private track elsewhere from his DM
        await db.run(lambda s: record_share(s, bob, t.id, ("telegram", "-100555")))
    page = await db.run(lambda s: channel_shares(s, channel))
    assert [x.id for x in page.items] == [t.id]


async def test_platform_file_ids_are_cached_per_platform(db):
    t = await track_of(db)
    await db.run(lambda s: cache_file_id(s, t.id, "telegram", "AgAD-file"))
    await db.run(lambda s: cache_file_id(s, t.id, "discord", "https://cdn/x.mp3"))
    alice = await user(db)
    assert (await db.run(lambda s: get_track(s, t.id, alice))).file_ids == {
        "telegram": "AgAD-file",
        "discord": "https://cdn/x.mp3",
    }


async def test_job_state_machine_is_guarded_and_idempotent(db):
    alice = await user(db)
    job, created = await db.run(lambda s: create_job(s, alice, {"genre": "calm"}, idempotency_key="tg:update:1"))
    again, created2 = await db.run(lambda s: create_job(s, alice, {"genre": "calm"}, idempotency_key="tg:update:1"))
    assert created and not created2 and again.id == job.id
    with pytest.raises(InvalidTransition, match="is queued; it cannot become done"):
        await db.run(lambda s: finish_job(s, job.id, track_id=1))
    running = await db.run(lambda s: start_job(s, job.id))
    assert running.state is JobState.running and running.attempts == 1 and running.started_at
    with pytest.raises(InvalidTransition):
        await db.run(lambda s: start_job(s, job.id))  # a second worker cannot start it too
    await db.run(lambda s: set_progress(s, job.id, 0.5))
    await db.run(lambda s: set_progress(s, job.id, 0.2))  # never backwards
    t = await track_of(db)
    done = await db.run(lambda s: finish_job(s, job.id, t.id))
    assert done.state is JobState.done and done.progress == 1.0 and done.track_id == t.id and done.finished_at
    with pytest.raises(InvalidTransition):
        await db.run(lambda s: cancel_job(s, job.id, alice))

    other, _ = await db.run(lambda s: create_job(s, alice, {"genre": "pop"}))
    await db.run(lambda s: start_job(s, other.id))
    retried = await db.run(lambda s: requeue_job(s, other.id))  # its worker lost it: composed again
    assert retried.state is JobState.queued and retried.attempts == 1
    with pytest.raises(InvalidTransition, match="taken over"):  # the first worker can no longer end it...
        await db.run(lambda s: fail_job(s, other.id, "lost its claim", attempt=1))
    again = await db.run(lambda s: start_job(s, other.id))
    assert again.attempts == 2
    with pytest.raises(InvalidTransition, match="taken over"):  # ...before or after the next one starts it
        await db.run(lambda s: finish_job(s, other.id, t.id, attempt=1))
    failed = await db.run(lambda s: fail_job(s, other.id, "model crashed", attempt=2))
    assert failed.error == "model crashed"
    with pytest.raises(InvalidTransition):  # its user was told: it is never composed again
        await db.run(lambda s: requeue_job(s, other.id))
    bob = await user(db, "bob")
    with pytest.raises(NotFound):
        await db.run(lambda s: cancel_job(s, other.id, bob))


async def test_fifty_concurrent_writers_lose_nothing_and_duplicate_nothing(db):
    shared = await track_of(db, owner="owner")
    channel = ("discord", "guild-chan")
    owner = await user(db, "owner")
    await db.run(lambda s: record_share(s, owner, shared.id, channel))

    async def writer(i: int):
        async def go(s):
            u = await get_or_create_user(s, "telegram", f"user{i % 10}")  # ten users, five writers each
            t = await record_track(s, u, new_track(seed=i))
            await add_favorite(s, u, t.id)
            await add_favorite(s, u, shared.id, channel)  # the same favourite, five times per user
            return t.id

        return await db.run(go)

    ids = await asyncio.gather(*(writer(i) for i in range(50)))
    assert len(set(ids)) == 50
    assert await count(db, Track) == 51
    assert await count(db, User) == 11
    assert await count(db, Favorite) == 50 + 10


async def test_a_dropped_connection_mid_transaction_is_retried_and_never_half_done(db):
    attempts = []

    async def write(s):
        u = await get_or_create_user(s, "telegram", "carol")
        await record_track(s, u, new_track(seed=5))
        attempts.append(1)
        if len(attempts) == 1:  # the connection dies after the first half of the work
            conn = await s.connection()
            if db.dialect == "postgresql":
                await conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
            else:
                raw = await conn.get_raw_connection()
                await raw.driver_connection.close()
        await record_track(s, u, new_track(seed=6))

    await db.run(write)
    assert len(attempts) == 2
    assert await count(db, Track) == 2  # both halves once, nothing from the broken attempt
    assert await count(db, User) == 1


async def test_forget_me_deletes_the_users_rows_and_only_their_files(db, tmp_path):
    store = LocalArtifactStore(tmp_path / "artifacts")
    mine = await save_track(db, store, "telegram", "alice", new_track(1), b"ID3 mp3 alice", b"MThd mid", b"PNG a")
    theirs = await save_track(db, store, "telegram", "bob", new_track(2), b"ID3 mp3 bob", b"MThd mid", b"PNG b")
    alice, bob = await user(db), await user(db, "bob")
    await db.run(lambda s: add_favorite(s, alice, mine.id))
    await db.run(lambda s: record_share(s, alice, mine.id, ("telegram", "chan")))
    await db.run(lambda s: create_job(s, alice, {"genre": "calm"}))
    await db.run(lambda s: record_track(s, bob, new_track(3, parent_id=mine.id, lineage="reroll")))

    gone = await forget_user(db, store, "telegram", "alice")
    assert gone.tracks == 1 and gone.files == 2  # the MIDI bytes are bob's too, so that file stays
    assert not store.exists(mine.mp3_key) and not store.exists(mine.png_key)
    assert store.exists(theirs.midi_key) and store.exists(theirs.mp3_key)
    for model in (Favorite, Share, Job):
        assert await count(db, model) == 0
    assert await count(db, User) == 1 and await count(db, Track) == 2
    child = (await db.run(lambda s: history(s, bob))).items[0]
    assert child.parent_id is None  # lineage to a forgotten track is cut, the child stays


async def test_retention_deletes_old_unfavourited_files_but_keeps_the_recipe(db, tmp_path):
    store = LocalArtifactStore(tmp_path / "artifacts")
    old = await save_track(db, store, "telegram", "alice", new_track(1), b"mp3 old", b"mid old", b"png old")
    kept = await save_track(db, store, "telegram", "alice", new_track(2), b"mp3 fav", b"mid fav", b"png fav")
    new = await save_track(db, store, "telegram", "alice", new_track(3), b"mp3 new", b"mid new", b"png new")
    alice = await user(db)
    await db.run(lambda s: add_favorite(s, alice, kept.id))
    month_ago = utcnow() - timedelta(days=40)

    async def age(s):
        await s.execute(update(Track).where(Track.id.in_([old.id, kept.id])).values(created_at=month_ago))

    await db.run(age)
    result = await expire_artifacts(db, store, older_than_days=30)
    assert result.tracks == 1 and result.files == 3
    expired = await db.run(lambda s: get_track(s, old.id, alice))
    assert expired.status is TrackStatus.expired and expired.mp3_key is None
    assert unpack_tokens(expired.tokens) and expired.seed == 1  # re-renderable
    assert store.exists(kept.mp3_key) and store.exists(new.mp3_key) and not store.exists(old.mp3_key)


async def test_a_full_disk_is_a_clear_error_and_leaves_no_rows(db, tiny_disk):
    store = LocalArtifactStore(tiny_disk)
    with pytest.raises(ArtifactStoreError, match="disk is full"):
        await save_track(db, store, "telegram", "alice", new_track(), os.urandom(200_000), b"mid", b"png")
    assert await count(db, Track) == 0
    assert not [p for p in tiny_disk.rglob("*") if p.is_file()]  # no half-written temp file either


def test_artifact_keys_are_content_addressed_and_traversal_proof(tmp_path):
    store = LocalArtifactStore(tmp_path)
    key = store.put(b"hello", "mp3")
    assert key == store.put(b"hello", "mp3") and store.get(key) == b"hello"
    assert key.endswith(".mp3") and len(key.split("/")[1]) == 64 + 4
    for bad in ("../../etc/passwd", "/etc/passwd", "ab/../../x.mp3", key.replace(".mp3", ".sh")):
        with pytest.raises(NotFound):
            store.get(bad)
    with pytest.raises(ValueError, match="mp3, mid or png"):
        store.put(b"x", "exe")


async def test_migrations_create_exactly_the_models(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    from storage.migrate import upgrade_async
    from storage.models import Base

    await upgrade_async(database_url)
    engine = create_async_engine(database_url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
        tables = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
    await engine.dispose()
    assert diff == []
    assert {"users", "tracks", "favorites", "shares", "jobs", "alembic_version"} <= tables


async def test_a_track_for_a_job_is_recorded_with_the_jobs_ending_or_not_at_all(db, tmp_path):
    """One transaction for the track row and the job's 'done': a job cancelled meanwhile gets no
    track, and a second finishing (a retried worker) cannot add one."""
    store = LocalArtifactStore(tmp_path / "artifacts")
    alice = await user(db)
    job = (await db.run(lambda s: create_job(s, alice, {"genre": "calm"})))[0]
    await db.run(lambda s: start_job(s, job.id))
    track = await save_track(db, store, "telegram", "alice", new_track(1), b"ID3 a", b"MThd a", b"PNG a", job_id=job.id)
    done = await db.run(lambda s: s.get(Job, job.id))
    assert done.state is JobState.done and done.track_id == track.id
    with pytest.raises(InvalidTransition):
        await save_track(db, store, "telegram", "alice", new_track(2), b"ID3 b", b"MThd b", b"PNG b", job_id=job.id)
    cancelled = (await db.run(lambda s: create_job(s, alice, {"genre": "jazz"})))[0]
    await db.run(lambda s: cancel_job(s, cancelled.id, alice))
    with pytest.raises(InvalidTransition):
        await save_track(
            db, store, "telegram", "alice", new_track(3), b"ID3 c", b"MThd c", b"PNG c", job_id=cancelled.id
        )
    assert await count(db, Track) == 1


async def test_migrations_take_urls_with_percent_escapes(tmp_path):
    """A URL-encoded password ("s3cr%40t") must not be read as config interpolation, whose error
    message would print the whole URL, password included."""
    from storage.migrate import alembic_config, upgrade_async

    url = "postgresql+asyncpg://mel:s3cr%40t@db.example/mel"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url
    await upgrade_async(f"sqlite+aiosqlite:///{tmp_path / 'odd%40folder' / 'm.db'}")
    assert (tmp_path / "odd@folder" / "m.db").is_file()  # the URL's escapes decoded, as SQLAlchemy reads it


async def test_a_cancelled_caller_lets_its_transaction_end_whole(db):
    """Cancelling a caller mid-transaction (a bot stopping its followers) must not cut the
    transaction short: cut, the driver's rollback was interrupted too, and the pool logged a
    half-reset connection. The transaction ends whole, then the cancel goes on."""
    began = asyncio.Event()

    async def two_users(s):
        await get_or_create_user(s, "telegram", "carol")
        began.set()
        await asyncio.sleep(0.3)
        await get_or_create_user(s, "telegram", "dave")

    task = asyncio.create_task(db.run(two_users))
    await began.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    names = await db.run(lambda s: s.scalars(select(User.platform_user_id)))
    assert {"carol", "dave"} <= set(names)  # and the connection serves the next caller


async def test_a_transaction_waits_out_a_postgres_restart_and_is_done_once(own_postgres):
    """The server goes down as in a crash (`pg_ctl stop -m immediate`) under a pooled connection;
    a write asked for meanwhile waits through "connection refused" and "the database system is
    starting up", and is done once the server is back."""
    db = Database(own_postgres.url)
    try:
        await db.create_all()
        await db.run(lambda s: get_or_create_user(s, "telegram", "alice"))  # a pooled connection, soon dead
        own_postgres.stop()
        write = asyncio.create_task(db.run(lambda s: get_or_create_user(s, "telegram", "bob")))
        await asyncio.sleep(1.0)
        assert not write.done()  # waiting, not failed at once
        await asyncio.to_thread(own_postgres.start)
        await asyncio.wait_for(write, 30)
        await asyncio.to_thread(own_postgres.restart)  # the pool's connections die once more
        await db.run(lambda s: get_or_create_user(s, "telegram", "carol"))
        names = await db.run(lambda s: s.scalars(select(User.platform_user_id)))
        assert sorted(names) == ["alice", "bob", "carol"]
    finally:
        await db.dispose()


async def test_a_database_down_past_the_bound_is_storage_unavailable(own_postgres):
    db = Database(own_postgres.url, retry_for_s=1.5)
    try:
        await db.create_all()
        own_postgres.stop()
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"unreachable for 1\.5 s"):
            await db.run(lambda s: get_or_create_user(s, "telegram", "alice"))
        assert 1.5 <= time.monotonic() - began < 5.0  # retried for the whole bound, then given up
    finally:
        await db.dispose()


def test_what_counts_as_transient_is_read_through_sqlalchemy_s_wrapping():
    """Errors as they arrive from the asyncpg dialect (seen on a real restart): the driver's error is
    `.orig`'s cause; a connect can fail with a bare OSError. A full disk or a constraint is no
    reason to wait."""
    import errno

    from sqlalchemy.exc import DBAPIError, IntegrityError

    from storage.db import transient

    class DialectError(Exception):
        def __init__(self, message: str, sqlstate: str | None) -> None:
            super().__init__(message)
            self.sqlstate = sqlstate

    def wrapped(message: str, sqlstate: str | None) -> DBAPIError:
        return DBAPIError("SELECT 1", None, DialectError(message, sqlstate))

    assert transient(ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"))
    assert transient(wrapped("the database system is starting up", "57P03"))
    assert transient(wrapped("the database system is shutting down", None))
    assert transient(wrapped("terminating connection due to administrator command", "57P01"))
    assert transient(wrapped("could not serialize access", "40001"))
    assert transient(wrapped("deadlock detected", "40P01"))
    assert transient(wrapped("connection was closed in the middle of operation", "08003"))
    assert not transient(OSError(errno.ENOSPC, "No space left on device"))
    assert not transient(IntegrityError("INSERT", None, DialectError("duplicate key", "23505")))
    assert not transient(wrapped("relation does not exist", "42P01"))


async def test_two_transactions_that_deadlock_are_both_done_one_run_again(db):
    """Each takes one user's row, then wants the other's: PostgreSQL breaks the deadlock by failing
    one (40P01), which is run again whole. (SQLite's BEGIN IMMEDIATE never lets them interleave.)"""
    ids = [(await user(db, name)).id for name in ("alice", "bob")]
    holding, tries = [asyncio.Event(), asyncio.Event()], [0, 0]

    async def rename_both(me: int) -> None:
        async def both(s):
            tries[me] += 1
            await s.execute(update(User).where(User.id == ids[me]).values(display_name=f"by {me}"))
            holding[me].set()
            if tries[me] == 1:  # the first time, wait until the other holds its row too
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(holding[1 - me].wait(), 3)
            await s.execute(update(User).where(User.id == ids[1 - me]).values(display_name=f"by {me}"))

        await db.run(both)

    await asyncio.wait_for(asyncio.gather(rename_both(0), rename_both(1)), 30)
    names = await db.run(lambda s: s.scalars(select(User.display_name)))
    assert len(set(names)) == 1  # both rows written by the one that ran last, whole
    if db.dialect == "postgresql":
        assert sorted(tries) == [1, 2]
