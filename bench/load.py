"""Load on the job API: N simulated users submitting M compose jobs each, through the in-process
runner (generation batched across users, rendering beside it, rows and files stored).

    python bench/load.py [--users 8] [--jobs 1] [--seconds 30] [--rounds 3] [--checkpoint PATH]

Reports one user's track alone, then everyone at once: throughput, p50/p95 time to result and
the batching gain. Each round draws new seeds: how long 30 s of music takes to write depends on
the piece (600-3,000 events), and everyone at once lasts as long as the busiest piece, so one
set of seeds can flatter or wrong a change that only alters which pieces come out. Each round
says how much longer its busiest piece is than the pieces alone (the length factor): the ratio
is about that times what a step of the whole batch costs over a step of one row. Then each of
the jobs runs again alone, so that what batching costs is seen with the pieces held fixed: each
user's track at once over the same track alone, and everyone at once over the slowest alone. Last line,
medians over the rounds: users=… single_s=… concurrent_s=… ratio=… (the median of the rounds'
concurrent / single, so not always concurrent_s / single_s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from jobs import ComposeRequest
from jobs.inprocess import InProcessRunner, RunnerSettings
from storage import Database, LocalArtifactStore


async def run_jobs(runner: InProcessRunner, requests: list[ComposeRequest]) -> tuple[list[float], float, list[int]]:
    """Submit all at once; seconds from submission to the 'done' event per job, and to the last
    job's 'rendering' event (when composing ended and only rendering was left); the tracks' ids."""
    t0 = time.perf_counter()
    composed: list[float] = []
    tracks: list[int] = []

    async def one(r: ComposeRequest) -> float:
        job_id = await runner.submit(r)
        async for event in runner.events(job_id):
            if event.kind == "rendering":
                composed.append(time.perf_counter() - t0)
            if event.terminal:
                if event.kind != "done":
                    raise RuntimeError(f"job {job_id} ended {event.kind}: {event.reason}")
                tracks.append(event.track_id)
                break
        return time.perf_counter() - t0

    done = list(await asyncio.gather(*(one(r) for r in requests)))
    return done, max(composed), tracks


async def events_written(db: Database, track_ids: list[int]) -> list[int]:
    """How many events each track's piece has, as stored."""
    from sqlalchemy import select

    from storage.models import Track
    from storage.tracks import unpack_tokens

    async with db.sessions() as session:
        rows = await session.execute(select(Track.tokens).where(Track.id.in_(track_ids)))
        return [len(unpack_tokens(data)) for (data,) in rows]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=1, help="jobs per user")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=3, help="seed sets, each its own alone-then-together comparison")
    ap.add_argument("--checkpoint")
    ap.add_argument("--threads", type=int, help="torch threads for generation (default: the runner's choice)")
    args = ap.parse_args()

    from generator import load_model  # here: the render processes re-import this script, and need no torch
    from melomania.settings import Settings

    ckpt = args.checkpoint or Settings().checkpoint_path()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'load.db'}")
        await db.create_all()
        n = args.users * args.jobs
        runner = InProcessRunner(
            db,
            LocalArtifactStore(Path(tmp) / "artifacts"),
            lambda: load_model(ckpt),
            RunnerSettings(max_batch=max(16, n), queue_cap=max(200, n), per_user=args.jobs, torch_threads=args.threads),
        )
        await runner.start()
        genres = ["calm", "jazz", "pop", "classic"]
        rounds = []
        print(f"checkpoint {ckpt}: {args.seconds:g}-second tracks")
        try:
            await run_jobs(runner, [ComposeRequest("cli", "warmup", "calm", seconds=2, seed=0)])
            for r in range(args.rounds):
                rounds.append(await one_round(runner, args, genres, seed=1 + 1000 * r))
        finally:
            await runner.stop()
            await db.dispose()
    single, concurrent = (statistics.median(x[k] for x in rounds) for k in ("single", "concurrent"))
    ratio = statistics.median(x["concurrent"] / x["single"] for x in rounds)
    factor = statistics.median(x["length_factor"] for x in rounds)
    print(f"median length factor (busiest piece at once over the mean piece alone): {factor:.2f}")
    worst, over = (statistics.median(x[k] for x in rounds) for k in ("worst_slowdown", "over_slowest"))
    print(f"medians against the same jobs alone: worst user {worst:.2f}x; all at once over the slowest {over:.2f}x")
    print(f"users={args.users} single_s={single:.2f} concurrent_s={concurrent:.2f} ratio={ratio:.2f}")


async def one_round(runner: InProcessRunner, args, genres: list[str], seed: int) -> dict[str, float]:
    # The baseline is one track alone in each genre of the mix, averaged: genres differ in notes
    # per second, so one genre alone would flatter or wrong the comparison.
    alone = [
        await run_jobs(runner, [ComposeRequest("cli", "solo", g, seconds=args.seconds, seed=seed)])
        for g in genres[: min(len(genres), args.users)]
    ]
    single = statistics.mean(done for (done,), _, _ in alone)
    single_composed = statistics.mean(c for _, c, _ in alone)
    alone_events = statistics.mean(await events_written(runner.db, [t for _, _, ids in alone for t in ids]))
    requests = [
        ComposeRequest("cli", f"user{u}", genres[u % 4], seconds=args.seconds, seed=seed + 100 + u * 10 + j)
        for u in range(args.users)
        for j in range(args.jobs)
    ]
    t0 = time.perf_counter()
    latencies, composed, tracks = await run_jobs(runner, requests)
    concurrent = time.perf_counter() - t0
    busiest = max(await events_written(runner.db, tracks))
    n = len(requests)
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    print(f"round with seeds from {seed}:")
    print(f"  one track alone: {single:.2f} s (composed after {single_composed:.2f} s), mean over {len(alone)} genres")
    print(
        f"  {n} tracks from {args.users} users at once: {concurrent:.1f} s, {n / concurrent * 60:.1f} tracks/min, "
        f"p50 {statistics.median(lat):.1f} s, p95 {p95:.1f} s to result; all composed after {composed:.2f} s"
    )
    print(
        f"  batching gain: {n * single / concurrent:.1f}x the throughput of one at a time; "
        f"ratio {concurrent / single:.2f}"
    )
    # All at once lasts as long as its busiest piece: the ratio is about this length factor times
    # what a batch's step costs over one row's (bench/step.py).
    print(
        f"  the busiest piece has {busiest} events, {busiest / alone_events:.2f}x the mean of the pieces alone "
        f"({alone_events:.0f}); ratio over that: {concurrent / single / (busiest / alone_events):.2f}"
    )
    # The same jobs again, each alone: what batching costs each user, with the piece held fixed
    # (the same seed writes the same piece alone: packed.for_decoding says where that holds).
    own = [(await run_jobs(runner, [r]))[0][0] for r in requests]
    slowdown = sorted(at_once / alone for at_once, alone in zip(latencies, own))
    print(
        f"  each job alone again: {statistics.mean(own):.2f} s mean, slowest {max(own):.2f} s; a user's own track "
        f"at once over alone: median {statistics.median(slowdown):.2f}x, worst {slowdown[-1]:.2f}x; "
        f"all at once over the slowest alone: {concurrent / max(own):.2f}x"
    )
    return {
        "single": single,
        "concurrent": concurrent,
        "length_factor": busiest / alone_events,
        "worst_slowdown": slowdown[-1],
        "over_slowest": concurrent / max(own),
    }


if __name__ == "__main__":
    asyncio.run(main())
