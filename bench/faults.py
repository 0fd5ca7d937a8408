"""Fault injection on real servers: a burst of compose jobs through the job API while something
breaks, then what became of every job, judged from the database and from the endings the API told.

    python bench/faults.py [--kinds all|K,K] [--jobs 20] [--times 2] [--settle 25] [--seconds 2]
                           [--checkpoint PATH|shipped] [--seed 1] [--at SHARE] [--quick] [--keep]

PostgreSQL and redis-server run on loopback (tests/servers.py). A "bot" child process (this script
with --bot) submits the burst (one job per user, idempotency keys as the chats send them),
follows every job with `events()` as the front ends do, writes each ending it is told to a
journal and gives the receipt; started again, it follows `undelivered()` and submits what it had
not yet acknowledged, as a restarted bot does. In-process, that child is also the runner; over
Redis, one `melomania worker` child composes (heartbeat as configured, 5 s by default). A child
that exits by itself is started again, as docker-compose's `restart: unless-stopped` would.
The kinds (--times N: faults per burst, each once a random share of the jobs has ended):

  kill-runner-sqlite    SIGKILL the in-process runner's process, start it again
  kill-runner-postgres  the same on PostgreSQL
  kill-worker           SIGKILL the Redis worker, start it again
  restart-postgres      `pg_ctl restart -m immediate` under the in-process runner
  restart-redis         redis-server stopped (SIGTERM: it saves its snapshot) and started again
  crash-redis           redis-server SIGKILLed and started again: the last snapshot is all it has
  full-disk             the artifact store on a small tmpfs, filled up mid-burst (once)

Redis runs as docker-compose runs it (the redis image's defaults: RDB snapshots, no AOF), over
PostgreSQL. Each setup first runs a fault-free burst, the baseline: when each job ends normally.
Per kind: jobs submitted; done; failed, by the reason the user was told (a refused submission
too); lost (never told any ending); duplicated (told more than one ending, or more than one track
stored, for one job); stuck (still queued or running in the database once nothing has ended for
--settle seconds after the last fault); wait_s, the longest any job was told its ending later
than in the baseline; and the exceptions the children logged. A tiny random model composes
unless --checkpoint says otherwise: the burst is rendering, storage and the faults. Last line:
faults=<kinds> submitted=<n> lost=<n> duplicated=<n> stuck=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The throwaway servers live with the tests, which start them the same way.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import PostgresServer, RedisServer

PLATFORM = "telegram"
GENRES = ("calm", "jazz", "pop", "classic")
DISK_BYTES = 4 << 20  # the full-disk kind's artifact store: room for the burst until it is filled
READY_TIMEOUT_S = 180.0


# --- the bot child: submits, follows, writes the endings it is told ---------------------------


class Journal:
    """JSON lines appended by the bot child (every life of it) and read by the bench. One write
    per line on an O_APPEND descriptor: a SIGKILL never leaves half a line behind another."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def write(self, **entry: Any) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self.fd, (json.dumps({"t": time.time(), "pid": os.getpid(), **entry}) + "\n").encode())

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            with suppress(ValueError):
                entries.append(json.loads(line))
        return entries


def compose_request(plan: dict[str, Any], i: int):
    from jobs import ComposeRequest

    return ComposeRequest(
        PLATFORM,
        f"u{i}",  # one job per user: the tracks a user owns are the tracks their job stored
        GENRES[i % len(GENRES)],
        seconds=plan["seconds"],
        seed=i,
        idempotency_key=f"faults:{plan['kind']}:{i}",
        reply_to={"chat_id": 1000 + i},
    )


async def start_backend(plan: dict[str, Any], db):
    if plan["redis_url"]:
        from jobs.redis_backend import RedisBackend

        backend = RedisBackend(db, plan["redis_url"])
    else:
        from generator import load_model
        from jobs.inprocess import InProcessRunner
        from storage import LocalArtifactStore

        checkpoint = plan["checkpoint"]
        backend = InProcessRunner(db, LocalArtifactStore(plan["artifacts"]), lambda: load_model(checkpoint))
    await backend.start()  # in-process: resumes the jobs a killed life left; Redis: queues them again
    return backend


async def follow(backend, job_id: int, journal: Journal) -> None:
    """As a front end follows a job: to its ending, then the receipt. A follower that breaks off
    leaves the job undelivered, for the bot's next start (as the bots do)."""
    try:
        async for event in backend.events(job_id):
            if event.terminal:
                journal.write(ev="ending", job=job_id, kind=event.kind, reason=event.reason, track=event.track_id)
                try:
                    await backend.delivered(job_id)
                except Exception as exc:
                    journal.write(ev="no-receipt", job=job_id, error=describe(exc))
                return
        journal.write(ev="unfollowed", job=job_id, error="the events stopped without an ending")
    except Exception as exc:
        journal.write(ev="unfollowed", job=job_id, error=describe(exc))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]


async def serve(plan: dict[str, Any]) -> None:
    """One life of the bot: start, follow what is undelivered, submit what was not acknowledged,
    follow it, until SIGTERM."""
    from jobs.api import Refused
    from storage import Database

    journal, stop = Journal(Path(plan["journal"])), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    acknowledged = {e["i"] for e in journal.read() if e["ev"] in ("submitted", "refused")}
    db = Database(plan["database_url"])
    backend = await start_backend(plan, db)
    followers: dict[int, asyncio.Task] = {}

    def follow_once(job_id: int) -> None:
        if job_id not in followers:
            followers[job_id] = asyncio.create_task(follow(backend, job_id, journal))

    for pending in await backend.undelivered(PLATFORM):
        follow_once(pending.job_id)
    journal.write(ev="ready")
    for i in range(plan["jobs"]):
        if i in acknowledged:
            continue
        try:
            job_id = await backend.submit(compose_request(plan, i))
        except Refused as exc:
            journal.write(ev="refused", i=i, reason=str(exc))
            continue
        except Exception as exc:  # a bot's error handler answers "sorry" to the update
            journal.write(ev="refused", i=i, reason=f"the submission raised {describe(exc)}")
            continue
        journal.write(ev="submitted", i=i, job=job_id)
        follow_once(job_id)
    await stop.wait()
    for task in followers.values():
        task.cancel()
    await asyncio.gather(*followers.values(), return_exceptions=True)
    await backend.stop()
    await db.dispose()


def run_bot(plan_path: str) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(json.loads(Path(plan_path).read_text())))


# --- the system under test: servers, children, faults -------------------------------------------


@dataclass
class Servers:
    postgres: PostgresServer
    redis: RedisServer | None = None  # one per Redis kind: nothing of one burst's queue reaches the next


@dataclass
class Rig:
    """One burst's system: its database, journal, bot child and workers, and where they log."""

    kind: str
    work: Path
    database_url: str
    servers: Servers
    plan: dict[str, Any]
    env: dict[str, str]
    bot: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    lives: int = 0  # bot children started
    worker_lives: int = 0
    exits: Counter[str] = field(default_factory=Counter)  # children that ended by themselves

    @property
    def journal(self) -> Journal:
        return Journal(Path(self.plan["journal"]))

    def start_bot(self) -> None:
        """Start a life of the bot child; returns once it is ready (resumed, and submitting)."""
        self.lives += 1
        with open(self.work / f"bot{self.lives}.log", "w") as log:
            self.bot = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--bot", str(self.work / "plan.json")],
                env=self.env,
                stderr=log,
            )
        wait_until(lambda: any(e["ev"] == "ready" and e["pid"] == self.bot.pid for e in self.journal.read()), self.bot)

    def start_worker(self) -> None:
        self.worker_lives += 1
        log_path = self.work / f"worker{self.worker_lives}.log"
        with open(log_path, "w") as log:
            worker = subprocess.Popen([sys.executable, "-m", "melomania.cli", "worker"], env=self.env, stderr=log)
        self.workers.append(worker)
        wait_until(lambda: "worker ready" in log_path.read_text(), worker)

    def revive(self) -> None:
        """The supervisor's part (docker-compose's `restart: unless-stopped`): start again any
        child that ended by itself, and count it."""
        if self.bot is not None and self.bot.poll() is not None:
            self.exits[f"the bot child exited ({self.bot.returncode})"] += 1
            self.start_bot()
        for worker in [w for w in self.workers if w.poll() is not None]:
            self.exits[f"a worker exited ({worker.returncode})"] += 1
            self.workers.remove(worker)
            self.start_worker()

    def logs(self) -> list[Path]:
        return sorted(self.work.glob("*.log"))

    def stop(self) -> None:
        for child in [self.bot, *self.workers]:
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in [self.bot, *self.workers]:
            if child is not None:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


def wait_until(ready: Callable[[], bool], child: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if child.poll() is not None:
            raise RuntimeError(f"{child.args} exited ({child.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.args} not ready after {timeout_s:g} s")
        time.sleep(0.1)


def kill(child: subprocess.Popen) -> None:
    """SIGKILL, as the OOM killer does: no clean-up at all."""
    child.send_signal(signal.SIGKILL)
    child.wait()


def kill_runner(rig: Rig) -> None:
    assert rig.bot is not None
    kill(rig.bot)
    rig.start_bot()  # a supervisor's restart: docker's `restart: unless-stopped`, systemd


def kill_worker(rig: Rig) -> None:
    kill(rig.workers.pop())
    rig.start_worker()


def restart_postgres(rig: Rig) -> None:
    rig.servers.postgres.restart("immediate")


def restart_redis(rig: Rig) -> None:
    assert rig.servers.redis is not None
    rig.servers.redis.restart(crash=False)


def crash_redis(rig: Rig) -> None:
    assert rig.servers.redis is not None
    rig.servers.redis.restart(crash=True)


def fill_disk(rig: Rig) -> None:
    """Fill the artifact store's tmpfs to the last byte."""
    with suppress(OSError), open(Path(rig.plan["artifacts"]) / "filler", "wb") as fh:  # closing it raises too
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()


@dataclass(frozen=True)
class Kind:
    name: str
    redis: bool  # composed by Redis workers (else by the in-process runner in the bot child)
    database: str  # "sqlite" or "postgresql"
    inject: Callable[[Rig], None] | None  # None: no fault (a baseline)
    repeats: bool = True  # False: injected once, whatever --times says
    tmpfs: bool = False  # the artifact store on a small tmpfs

    @property
    def setup(self) -> str:
        return f"{'redis' if self.redis else 'inprocess'}/{self.database}"


KINDS = [
    Kind("kill-runner-sqlite", False, "sqlite", kill_runner),
    Kind("kill-runner-postgres", False, "postgresql", kill_runner),
    Kind("kill-worker", True, "postgresql", kill_worker),
    Kind("restart-postgres", False, "postgresql", restart_postgres),
    Kind("restart-redis", True, "postgresql", restart_redis),
    Kind("crash-redis", True, "postgresql", crash_redis),
    Kind("full-disk", False, "sqlite", fill_disk, repeats=False, tmpfs=True),
]


def baseline_of(kind: Kind) -> Kind:
    return Kind("baseline", kind.redis, kind.database, None)


# --- databases -----------------------------------------------------------------------------------


async def fresh_database(kind: Kind, work: Path, postgres_url: str) -> str:
    """A new, empty database for one burst, its tables created."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from storage import Database

    if kind.database == "sqlite":
        url = f"sqlite+aiosqlite:///{work / 'melomania.db'}"
    else:
        name = f"faults_{uuid.uuid4().hex[:10]}"
        engine = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        await engine.dispose()
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    await db.create_all()
    await db.dispose()
    return url


@dataclass(frozen=True)
class StoredJob:
    id: int
    index: int
    state: str
    error: str | None
    track_id: int | None
    attempts: int


@dataclass(frozen=True)
class Stored:
    jobs: dict[int, StoredJob]  # by request index
    tracks: Counter[int]  # tracks stored per request index (each request is its own user)


async def read_stored(database_url: str) -> Stored:
    from sqlalchemy import func, select

    from storage import Database, Job, Track, User

    db = Database(database_url)
    try:

        async def read(s):
            jobs = (await s.execute(select(Job))).scalars().all()
            owners = await s.execute(
                select(User.platform_user_id, func.count(Track.id)).join(Track).group_by(User.platform_user_id)
            )
            return jobs, list(owners)

        jobs, owners = await db.run(read)
    finally:
        await db.dispose()
    stored = {
        int(j.idempotency_key.rsplit(":", 1)[1]): StoredJob(
            j.id, int(j.idempotency_key.rsplit(":", 1)[1]), j.state.value, j.error, j.track_id, j.attempts
        )
        for j in jobs
        if j.idempotency_key
    }
    return Stored(stored, Counter({int(user[1:]): n for user, n in owners}))


async def unfinished_count(database_url: str) -> int | None:
    """Jobs still queued or running (None: the database did not answer)."""
    try:
        stored = await read_stored(database_url)
    except Exception:
        return None
    return sum(j.state in ("queued", "running") for j in stored.jobs.values())


# --- one burst --------------------------------------------------------------------------------


@dataclass
class Burst:
    """What one burst left: the stored truth, the journal, when it started, the faults injected."""

    kind: Kind
    stored: Stored
    journal: list[dict[str, Any]]
    t0: float
    injected: list[int | None]  # jobs unfinished at each fault
    exceptions: Counter[str]
    jobs: int
    exits: Counter[str]


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[None]:
    path.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode
    ):
        raise RuntimeError("the full-disk kind mounts a tmpfs: run as root")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


async def run_burst(kind: Kind, servers: Servers, args: argparse.Namespace, rng: random.Random) -> Burst:
    work = Path(tempfile.mkdtemp(prefix=f"faults-{kind.name.replace(' ', '-').replace('/', '-')}-"))
    try:
        if kind.redis:
            servers.redis = RedisServer(persist=True)
            servers.redis.start()
        with tmpfs(work / "artifacts", DISK_BYTES) if kind.tmpfs else _nothing():
            return await _burst(kind, servers, args, rng, work)
    finally:
        if servers.redis is not None:
            servers.redis.stop()
            servers.redis = None
        if args.keep:
            print(f"    kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


async def _burst(kind: Kind, servers: Servers, args: argparse.Namespace, rng: random.Random, work: Path) -> Burst:
    database_url = await fresh_database(kind, work, servers.postgres.url)
    plan = {
        "kind": kind.name,
        "jobs": args.jobs,
        "seconds": args.seconds,
        "checkpoint": str(args.checkpoint),
        "database_url": database_url,
        "redis_url": servers.redis.url if kind.redis else None,
        "artifacts": str(work / "artifacts"),
        "journal": str(work / "journal.jsonl"),
    }
    (work / "plan.json").write_text(json.dumps(plan))
    env = {
        **os.environ,
        "MELOMANIA_CHECKPOINT": str(args.checkpoint),
        "MELOMANIA_DATABASE_URL": database_url,
        "MELOMANIA_DATA_DIR": str(work),  # the workers' artifact store: <data>/artifacts
        "MELOMANIA_THREADS": "1",
        **({"MELOMANIA_REDIS_URL": servers.redis.url} if kind.redis else {}),
    }
    rig = Rig(kind.name, work, database_url, servers, plan, env)
    injected: list[int | None] = []
    try:
        if kind.redis:
            rig.start_worker()  # composing before the burst arrives: its start-up is not the fault's
        rig.start_bot()
        t0 = next(e["t"] for e in rig.journal.read() if e["ev"] == "ready")
        times = 0 if kind.inject is None else args.times if kind.repeats else 1
        # Moments drawn as how far the burst has got (jobs told their ending), not as seconds: on
        # a busy machine a burst's length varies, and a fault after its end would test nothing.
        shares = [rng.uniform(0.0, 0.75) if args.at is None else args.at for _ in range(times)]
        for share in sorted(shares):
            target = round(share * args.jobs)
            await wait_for(rig, lambda told, _, target=target: told >= target, args.settle)
            await supervise(rig, rng.uniform(0.0, 1.0))
            injected.append(await unfinished_count(database_url))
            await asyncio.to_thread(kind.inject, rig)
        await wait_for(rig, lambda told, left: told == args.jobs and left == 0, args.settle)
        stored = await read_stored(database_url)
    finally:
        rig.stop()
    return Burst(kind, stored, rig.journal.read(), t0, injected, exceptions_in(rig.logs()), args.jobs, rig.exits)


async def supervise(rig: Rig, seconds: float) -> None:
    """Wait, starting again any child that ends by itself meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.to_thread(rig.revive)
        await asyncio.sleep(min(0.5, left))


def told_count(rig: Rig) -> int:
    """Requests whose user has been told an ending (a refusal too)."""
    entries = rig.journal.read()
    ended = {e["job"] for e in entries if e["ev"] == "ending"}
    answered = {e["i"] for e in entries if e["ev"] == "refused"}
    answered |= {e["i"] for e in entries if e["ev"] == "submitted" and e["job"] in ended}
    return len(answered)


async def wait_for(rig: Rig, enough: Callable[[int, int | None], bool], quiet_s: float) -> None:
    """Wait, supervising, until `enough(told, unfinished)`: requests told their ending, stored
    jobs not ended (None: the database did not answer); or until neither has moved for quiet_s."""
    seen, since = None, time.monotonic()
    while True:
        now = (told_count(rig), await unfinished_count(rig.database_url))
        if enough(*now):
            return
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        await supervise(rig, 0.5)


EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Unavailable|Refused|Transition|Pool)):\s*(.*)$")


def exceptions_in(logs: list[Path]) -> Counter[str]:
    """The exceptions the children logged (a traceback's last line), by class and first words."""
    seen: Counter[str] = Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if m := EXCEPTION_LINE.match(line.strip()):
                seen[f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)[:70]}"] += 1
    return seen


# --- judging a burst ----------------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    setup: str
    submitted: int
    done: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    disagree: list[str] = field(default_factory=list)
    worst_wait_s: float = 0.0
    ended_at: dict[int, float] = field(default_factory=dict)  # request index → seconds after t0
    injected: list[int | None] = field(default_factory=list)
    exceptions: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    unfollowed: Counter[str] = field(default_factory=Counter)  # followers that broke off, by error


def judge(burst: Burst, normal: dict[int, float]) -> Verdict:
    """Each request's fate from the stored jobs and tracks and the endings the API told."""
    verdict = Verdict(burst.kind.name, burst.kind.setup, burst.jobs, injected=burst.injected)
    verdict.exceptions, verdict.exits = burst.exceptions, burst.exits
    verdict.unfollowed = Counter(e["error"] for e in burst.journal if e["ev"] == "unfollowed")
    submitted = {e["job"]: e["i"] for e in burst.journal if e["ev"] == "submitted"}
    told: dict[int, list[dict[str, Any]]] = {i: [] for i in range(burst.jobs)}
    for e in burst.journal:
        if e["ev"] == "refused":
            told[e["i"]].append({"kind": "failed", "reason": f"refused: {e['reason']}", "t": e["t"]})
    by_id = {job.id: job.index for job in burst.stored.jobs.values()}
    for e in burst.journal:
        if e["ev"] == "ending":
            told[by_id.get(e["job"], submitted.get(e["job"], -1))].append(e)
    for i in range(burst.jobs):
        judge_one(verdict, i, told[i], burst.stored.jobs.get(i), burst.stored.tracks[i], burst.t0)
    waits = [t - normal[i] for i, t in verdict.ended_at.items() if i in normal]
    verdict.worst_wait_s = max([0.0, *waits])
    return verdict


def judge_one(verdict: Verdict, i: int, told: list[dict[str, Any]], job: StoredJob | None, tracks: int, t0: float):
    where = f"#{i} (job {job.id}, stored {job.state}, {job.attempts} attempts)" if job else f"#{i} (never stored)"
    if job is not None and job.state in ("queued", "running"):
        verdict.stuck.append(where)
    if len(told) > 1 or tracks > 1:
        endings = [f"{e['kind']}{'' if e.get('track') is None else ' ' + str(e['track'])}" for e in told]
        again = len(set(endings)) == 1 and len({e.get("pid") for e in told}) == len(told)
        why = "; the same ending again, from the next life of a bot killed before its receipt" if again else ""
        verdict.duplicated.append(f"{where}: told {', '.join(endings) or 'nothing'}; {tracks} tracks{why}")
    if not told:
        verdict.lost.append(where)
        return
    first = told[0]
    verdict.ended_at[i] = first["t"] - t0
    if first["kind"] == "done":
        verdict.done += 1
    else:
        verdict.failed[f"{first['kind']}: {first.get('reason')}"] += 1
    ended = job is not None and job.state not in ("queued", "running")
    if ended and (first["kind"] != job.state or (job.state == "done" and first.get("track") != job.track_id)):
        verdict.disagree.append(f"{where}: told {first['kind']}, stored {job.state}")


# --- the report ---------------------------------------------------------------------------------


HEADER = (
    f"{'kind':22} {'setup':20} {'sub':>4} {'done':>4} {'fail':>4} {'lost':>4} {'dup':>4} {'stuck':>5} {'wait_s':>7}"
)


def report(verdict: Verdict) -> None:
    v = verdict
    print(
        f"{v.name:22} {v.setup:20} {v.submitted:4d} {v.done:4d} {sum(v.failed.values()):4d} {len(v.lost):4d} "
        f"{len(v.duplicated):4d} {len(v.stuck):5d} {v.worst_wait_s:7.1f}"
    )
    if v.injected:
        at = ", ".join("?" if n is None else str(n) for n in v.injected)
        print(f"    injected {len(v.injected)}x, with {at} jobs unfinished")
    for reason, n in v.failed.most_common():
        print(f"    failed {n}x  {reason}")
    for label, items in (("lost", v.lost), ("duplicated", v.duplicated), ("stuck", v.stuck), ("disagree", v.disagree)):
        for item in items[:4]:
            print(f"    {label}: {item}")
        if len(items) > 4:
            print(f"    {label}: … and {len(items) - 4} more")
    for line, n in v.exits.items():
        print(f"    {line}, started again: {n}x")
    for error, n in v.unfollowed.most_common(3):
        print(f"    a follower broke off {n}x  {error}")
    for line, n in v.exceptions.most_common(4):
        print(f"    logged {n}x  {line}")


def normal_finishes(verdict: Verdict) -> dict[int, float]:
    return dict(verdict.ended_at)


# --- main ---------------------------------------------------------------------------------------


def tiny_checkpoint(folder: Path) -> Path:
    """A small random model (the tests' size): composing costs nothing, so the burst is
    rendering, storage and the faults."""
    import torch

    from generator import ModelConfig, MusicTransformer, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_ff=128, max_len=256, dropout=0.0)
    path = folder / "tiny.pt"
    save_checkpoint(MusicTransformer(config).eval(), path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="all", help="comma-separated kinds (see above), or all")
    ap.add_argument("--jobs", type=int, default=20, help="jobs per burst, one per user")
    ap.add_argument("--times", type=int, default=2, help="faults injected per burst (full-disk: once)")
    ap.add_argument("--settle", type=float, default=25.0, help="a burst is over once nothing has ended for this long")
    ap.add_argument("--seconds", type=float, default=2.0, help="music per job")
    ap.add_argument("--checkpoint", help="model to compose with: a path, or 'shipped' (default: a tiny random one)")
    ap.add_argument("--seed", type=int, default=1, help="draws the moments of the faults")
    ap.add_argument("--at", type=float, help="inject each fault once this share of the jobs has ended (0-1)")
    ap.add_argument("--quick", action="store_true", help="12 jobs, one fault per burst, 20 s to settle")
    ap.add_argument("--keep", action="store_true", help="keep each burst's folder (journal, logs, SQLite)")
    ap.add_argument("--bot", help=argparse.SUPPRESS)  # the child: a plan file
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs, args.times, args.settle = 12, 1, 20.0
    names = [k.name for k in KINDS]
    args.kinds = names if args.kinds == "all" else args.kinds.split(",")
    if unknown := set(args.kinds) - set(names):
        ap.error(f"unknown kinds {sorted(unknown)}; choose from {names}")
    return args


async def bench(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    kinds = [k for k in KINDS if k.name in args.kinds]
    postgres = PostgresServer()
    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        if args.checkpoint is None:
            args.checkpoint = tiny_checkpoint(folder)
        elif args.checkpoint == "shipped":
            from melomania.settings import Settings

            args.checkpoint = Settings().checkpoint_path()
        postgres.start()
        servers = Servers(postgres)
        print(
            f"{args.jobs} jobs of {args.seconds:g} s per burst, {args.times} faults each; checkpoint {args.checkpoint}"
        )
        print(HEADER)
        baselines: dict[str, Verdict] = {}
        verdicts = []
        for kind in kinds:
            if kind.setup not in baselines:
                base = baseline_of(kind)
                burst = await run_burst(base, servers, args, rng)
                baselines[kind.setup] = judge(burst, {})
                report(baselines[kind.setup])
            normal = normal_finishes(baselines[kind.setup])
            verdicts.append(judge(await run_burst(kind, servers, args, rng), normal))
            report(verdicts[-1])
    finally:
        postgres.remove()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"faults={len(verdicts)} submitted={sum(v.submitted for v in verdicts)} "
        f"lost={sum(len(v.lost) for v in verdicts)} duplicated={sum(len(v.duplicated) for v in verdicts)} "
        f"stuck={sum(len(v.stuck) for v in verdicts)}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bot:
        run_bot(args.bot)
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
