"""The default job backend: one generation thread running continuous batching over the KV cache,
a small render pool beside it, and every state change written through `storage` first.

The chat event loop never blocks: requests that arrive while a batch runs join it at the next
step, each row with its own sampling values, genre, length and seed; finished rows leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from generator import GeneratorError
from generator.params import GenerationRequest, draw_seed
from storage import ArtifactStore, Database, InvalidTransition, JobState, NotFound
from storage.errors import out_of_space, storage_trouble
from storage.ingest import save_track
from storage.jobs import (
    FINISHED,
    cancel_users_job,
    create_job,
    fail_job,
    requeue_job,
    set_progress,
    start_job,
    unfinished_jobs,
)
from storage.tracks import NewTrack
from storage.users import get_or_create_user

from .admission import BUSY, admit, over_quota
from .api import ComposeRequest, JobEvent, Refused
from .receipts import StoredDeliveries
from .settings import RunnerSettings

if TYPE_CHECKING:  # not at run time: a Redis-mode bot imports this and never torch
    from generator.checkpoint import LoadedModel
    from generator.decoding import BatchDecoder
    from generator.model import MusicTransformer

log = logging.getLogger(__name__)
# How long a cancel is remembered for a job this runner does not hold: long enough for a job read
# as queued (a Redis worker's) to arrive here, which takes milliseconds; the stored state covers
# every later arrival. Without a limit a worker would keep every cancel of the whole fleet.
CANCEL_MEMORY_S = 600.0
Queued = tuple[int, GenerationRequest]  # a job id and what to compose, on the generation thread's queue


class _Channel:
    """Events of one job, in order, to any number of listeners."""

    def __init__(self) -> None:
        self.last: JobEvent | None = None
        self.listeners: list[asyncio.Queue[JobEvent]] = []


class InProcessRunner(StoredDeliveries):
    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        load_model: Callable[[], LoadedModel],
        settings: RunnerSettings | None = None,
        soundfont: str | None = None,
        platforms: tuple[str, ...] | None = None,
        before_model: Callable[[int, str], None] | None = None,
    ):
        """`platforms`: the chats this process serves, whose unfinished jobs a start resumes (None:
        every job). A bot process serving one chat must leave another's jobs alone: the process
        serving that one is composing them, or resumes them itself. `before_model`: the
        decoder's seam for an allocation failure (BatchDecoder; tests inject one there)."""
        self.db, self.store, self.platforms = db, store, platforms
        self.settings = settings = settings or RunnerSettings()
        self._load_model = load_model
        self._before_model = before_model
        self._incoming: queue.SimpleQueue[Queued | None] = queue.SimpleQueue()
        self._cancelled: dict[int, float] = {}  # job id → when the cancel came (monotonic)
        self._released: dict[int, float] = {}  # job id → when this runner let it go (release)
        self._lock = threading.Lock()
        self._active: dict[int, ComposeRequest] = {}  # accepted and not finished
        self._waiting: list[int] = []  # accepted, not yet in the batch, in order
        self._reserved = 0  # submissions past the caps check, not yet accepted
        self._reserved_by: dict[tuple[str, str], int] = {}
        self._tries: dict[int, int] = {}
        self._attempts: dict[int, int] = {}  # the stored attempt this runner started each job in
        self._channels: dict[int, _Channel] = {}
        self._tasks: set[asyncio.Task] = set()
        self._starts: dict[int, asyncio.Task] = {}
        self._closed = False
        self._last_db_progress: dict[int, float] = {}
        self._progress_writes: set[int] = set()  # jobs whose progress is being written now
        from .render_pool import RenderPool  # not at import: Redis-mode bots need no audio libraries

        self._render_pool = RenderPool(settings.render_workers, soundfont)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded: LoadedModel | None = None
        self.decoder: Any = None  # the generation thread's BatchDecoder, for inspection

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, recover: bool = True) -> None:
        """Load the model, start the generation thread and, unless a queue (Redis) redelivers
        unfinished jobs itself, resume the ones a previous run left behind."""
        self._loop = asyncio.get_running_loop()
        self._render_pool.warm_up()
        loaded: asyncio.Future = self._loop.create_future()
        self._thread = threading.Thread(target=self._generation_thread, args=(loaded,), name="generation", daemon=True)
        self._thread.start()
        self.loaded = await loaded
        if recover:
            await self._recover()

    async def stop(self) -> None:
        """Stop composing and wait for every task of ours to end, so none outlives the runner
        (jobs left unfinished are resumed by the next start)."""
        self._stopping.set()
        self._incoming.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        await asyncio.sleep(0)  # run what the thread scheduled before it ended
        self._closed = True
        pending = [*self._tasks, *self._starts.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self._render_pool.close()
        except TimeoutError:
            log.warning("render processes still busy after 10 s; they end with this process")

    async def _recover(self) -> None:
        """Jobs a crash left queued are resumed; running ones start again, unless they already
        failed to finish too many times, in which case the user is told."""
        platforms = self.platforms if self.platforms is not None else (None,)
        jobs = [job for p in platforms for job in await self.db.run(lambda s, p=p: unfinished_jobs(s, p))]
        for job in sorted(jobs, key=lambda j: j.id):
            try:  # a request stored by another version may no longer read, or no longer be valid
                request = ComposeRequest.from_json(job.request)
                generation = request.generation_request(self._presets, self._follows_controls)
            except Exception as exc:  # one such job must not stop every start from here on
                log.warning("job %s cannot be resumed (%s); failing it", job.id, exc)
                with contextlib.suppress(InvalidTransition):
                    await self.db.run(lambda s, j=job.id: fail_job(s, j, "I could not resume it; please ask again"))
                continue
            if job.state is JobState.running:
                if job.attempts >= self.settings.max_attempts:
                    await self.db.run(lambda s, j=job.id: fail_job(s, j, "the composer restarted while working on it"))
                    self._emit(
                        JobEvent(
                            job.id, "failed", reason="the composer restarted while working on this; please ask again"
                        )
                    )
                    continue
                await self.db.run(lambda s, j=job.id: requeue_job(s, j))
            self._accept(job.id, request, generation)

    @property
    def _presets(self) -> dict:
        """The loaded checkpoint's own genre presets ({}: the reference's)."""
        return self.loaded.presets if self.loaded else {}

    @property
    def _follows_controls(self) -> bool:
        """Whether the model follows attribute controls (an unloaded model is given the benefit)."""
        return self.loaded is None or self.loaded.model.controls is not None

    # --- the API -------------------------------------------------------------------------------

    async def submit(self, request: ComposeRequest) -> int:
        """Accept a request (idempotent by its key) and return its job id; or Refused."""
        [job_id] = await self.submit_all([request])
        return job_id

    async def submit_all(self, requests: Sequence[ComposeRequest]) -> list[int]:
        """Accept one user's requests together (a chat's candidates), each idempotent by its key,
        and return their job ids; or Refused, with nothing stored, when they do not all fit."""
        admitted = [admit(r, self._presets, self._follows_controls) for r in requests]  # GeneratorError: nothing stored
        who, n = (requests[0].platform, requests[0].user_id), len(admitted)
        with self._lock:  # slots are taken before the first await, so a burst cannot overshoot the caps
            if len(self._active) + self._reserved + n > self.settings.queue_cap:
                raise Refused(BUSY)
            mine = sum(1 for r in self._active.values() if (r.platform, r.user_id) == who)
            mine += self._reserved_by.get(who, 0)
            if refusal := over_quota(mine, n, self.settings.per_user):
                raise Refused(refusal)
            self._reserved += n
            self._reserved_by[who] = self._reserved_by.get(who, 0) + n
        try:
            return [await self._submit(request, generation) for request, generation in admitted]
        finally:
            with self._lock:
                self._reserved -= n
                self._reserved_by[who] -= n
                if not self._reserved_by[who]:
                    del self._reserved_by[who]

    async def _submit(self, request: ComposeRequest, generation: GenerationRequest) -> int:
        async def record(s):
            user = await get_or_create_user(s, request.platform, request.user_id, request.display_name or None)
            if user.banned:
                raise Refused("composing is switched off for this account")
            return await create_job(s, user, request.to_json(), request.idempotency_key)

        job, created = await self.db.run(record)
        if created:
            self._accept(job.id, request, generation)
        return job.id

    async def cancel(self, job_id: int, platform: str, user_id: str) -> bool:
        """Cancel the user's own queued or running job; False if it had already finished."""

        try:
            await self.db.run(lambda s: cancel_users_job(s, job_id, platform, user_id))
        except InvalidTransition:
            return False
        self._remember_cancel(job_id)
        self._finish(job_id, JobEvent(job_id, "cancelled", reason="cancelled"))
        return True

    async def adopt(self, job_id: int, request: ComposeRequest) -> AsyncIterator[JobEvent]:
        """Compose a job stored elsewhere (a Redis worker's) and yield its events to the end."""
        if request.seed is None:  # stored by a version that drew seeds later
            request = replace(request, seed=draw_seed())
        self._channels.setdefault(job_id, _Channel())
        events = self._events(job_id)
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0)  # subscribed before the first event can be emitted
        self._accept(job_id, request)
        yield await first
        async for event in events:
            yield event

    def mark_cancelled(self, job_id: int) -> None:
        """Stop composing a job another process cancelled; its row leaves the batch at the next step."""
        self._remember_cancel(job_id)
        if job_id in self._active:
            self._finish(job_id, JobEvent(job_id, "cancelled", reason="cancelled"))

    def attempt(self, job_id: int) -> int | None:
        """The stored attempt this runner started the job in (None before its start is stored)."""
        return self._attempts.get(job_id)

    def release(self, job_id: int) -> None:
        """Stop composing a job and let it go, telling its user nothing: it is no longer ours (a
        Redis worker shutting down, or one whose job another worker started again). Its stored
        state stays as it is, for whoever composes it now; its listeners here get 'released'."""
        self._remember_cancel(job_id, released=True)  # the generation thread drops its row at the next step
        if job_id in self._active:
            self._finish(job_id, JobEvent(job_id, "released"))

    def _remember_cancel(self, job_id: int, released: bool = False) -> None:
        """For the generation thread (which drops the row at its next step) and, a cancel, for a
        job on its way here; forgotten after CANCEL_MEMORY_S, by when both have long seen it."""
        now = time.monotonic()
        with self._lock:
            (self._released if released else self._cancelled)[job_id] = now
            for marks in (self._cancelled, self._released):
                for stale in [j for j, when in marks.items() if now - when > CANCEL_MEMORY_S]:
                    del marks[stale]

    def _dropped(self, job_id: int) -> bool:
        """Whether the job's row must leave the batch (call with the lock held)."""
        return job_id in self._cancelled or job_id in self._released

    async def events(self, job_id: int) -> AsyncIterator[JobEvent]:
        """This job's events from now until it ends (the latest state first). A job this runner
        lets go (release) ends the stream with no ending: whoever composes it now tells its user,
        and a front end that saw no ending follows the job again at its next start."""
        async for event in self._events(job_id):
            if event.kind == "released":
                return
            yield event

    async def _events(self, job_id: int) -> AsyncIterator[JobEvent]:
        """`events`, "released" included (adopt's caller, a Redis worker, acts on it)."""
        channel = self._channels.get(job_id)
        if channel is None:
            yield await self._stored_event(job_id)
            return
        q: asyncio.Queue[JobEvent] = asyncio.Queue()
        channel.listeners.append(q)
        if channel.last is not None:
            q.put_nowait(channel.last)
        try:
            while True:
                event = await q.get()
                yield event
                if event.terminal:
                    return
        finally:
            if q in channel.listeners:
                channel.listeners.remove(q)

    async def _stored_event(self, job_id: int) -> JobEvent:
        from storage import Job

        job = await self.db.run(lambda s: s.get(Job, job_id))
        if job is None:
            raise NotFound(f"there is no job #{job_id}")
        return JobEvent.stored(job)

    # --- events --------------------------------------------------------------------------------

    def _emit(self, event: JobEvent) -> None:
        # Only jobs this runner holds have a channel; a late event for a finished job must not
        # open a new one, or a listener arriving after it would wait forever.
        channel = self._channels.get(event.job_id)
        if channel is None or (channel.last is not None and channel.last.terminal):
            return  # nothing follows an ending
        channel.last = event
        for q in channel.listeners:
            q.put_nowait(event)

    def _finish(self, job_id: int, event: JobEvent) -> None:
        """The job's last event; its listeners already hold it, later ones read the stored state."""
        self._emit(event)
        with self._lock:
            self._active.pop(job_id, None)
            if job_id in self._waiting:
                self._waiting.remove(job_id)
        self._tries.pop(job_id, None)
        self._attempts.pop(job_id, None)
        self._last_db_progress.pop(job_id, None)
        self._channels.pop(job_id, None)

    def _accept(self, job_id: int, request: ComposeRequest, generation: GenerationRequest | None = None) -> None:
        """Queue a stored job; `generation`: what admission made of it, else made here once."""
        with self._lock:
            cancelled = job_id in self._cancelled
            self._released.pop(job_id, None)  # let go once, ours again now (a Redis retry handed it back)
        if cancelled:  # cancelled elsewhere between being read as queued and arriving here
            self._channels.setdefault(job_id, _Channel())
            self._finish(job_id, JobEvent(job_id, "cancelled", reason="cancelled"))
            return
        with self._lock:
            self._active[job_id] = request
            self._waiting.append(job_id)
            position = len(self._waiting)
        self._channels.setdefault(job_id, _Channel())
        self._emit(JobEvent(job_id, "queued", position=position))
        try:
            if generation is None:
                generation = request.generation_request(self._presets, self._follows_controls)
        except GeneratorError as exc:  # a Redis job asking controls of a worker whose model has none
            self._spawn(self._failed(job_id, str(exc)))
            return
        self._incoming.put((job_id, generation))

    def _spawn(self, coro) -> None:
        """Run `coro` in the background, kept referenced until it ends; its failure is logged, never
        left for the garbage collector's "Task exception was never retrieved"."""
        if self._closed:
            coro.close()
            return
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s failed", task.get_coro().__qualname__, exc_info=exc)

    def _from_thread(self, fn: Callable, *args: Any) -> None:
        self._loop.call_soon_threadsafe(fn, *args)

    # --- the generation thread -----------------------------------------------------------------

    def _generation_thread(self, loaded: asyncio.Future) -> None:
        """Load the model here, not on another thread: every thread that runs torch ops keeps its
        own OpenMP pool, and once the pools together hold more threads than there are cores,
        libgomp stops spinning and puts each pool's threads to sleep between ops. With the model
        loaded on a helper thread, 2 torch threads made one track 4.9 s instead of 3.2 s."""

        import torch

        from generator.decoding import decoding_threads
        from generator.packed import for_decoding

        def settle(how: Callable[[Any], None], outcome: Any) -> None:
            self._loop.call_soon_threadsafe(lambda: None if loaded.done() else how(outcome))

        try:
            if self.settings.torch_threads:
                torch.set_num_threads(self.settings.torch_threads)
            model = self._load_model()
            cores = len(os.sched_getaffinity(0))  # what this process may use, in a container too
            threads = self.settings.torch_threads or decoding_threads(model.model, cores)
            torch.set_num_threads(threads)
            decoding = for_decoding(model.model)  # built before start() returns: a failure here is start()'s
        except BaseException as exc:
            settle(loaded.set_exception, exc)
            return
        settle(loaded.set_result, model)  # the LoadedModel: start() keeps it for presets and recipes
        # Up to 4 for windows: only 2 cores were measured, and affinity does not see a CPU quota.
        helpers = min(cores, 4) if not self.settings.torch_threads and threads < cores else None
        self._generation_loop(decoding, window_threads=helpers)

    def _generation_loop(self, model: MusicTransformer, window_threads: int | None = None) -> None:
        """Compose until stopped; `model` is already prepared for decoding (packed.for_decoding).
        `window_threads`: torch threads for re-encoding a row's window (BatchDecoder)."""
        from generator.decoding import BatchDecoder, tokens_done_and_expected

        def new_decoder() -> BatchDecoder:
            self.decoder = BatchDecoder(
                model, packed=False, window_threads=window_threads, before_model=self._before_model
            )
            return self.decoder

        decoder = new_decoder()
        started: dict[int, float] = {}
        reported: dict[int, float] = {}
        held: list[Queued] = []  # waiting for their user's running job to end
        while not self._stopping.is_set():
            admitted = self._admit(decoder, held)
            if admitted is None:
                return
            if admitted:
                try:
                    decoder.add([r for _, r in admitted], tags=[j for j, _ in admitted])
                except Exception:  # a request the model cannot take must not stop the loop
                    log.exception("could not start jobs %s", [j for j, _ in admitted])
                    for job_id, _ in admitted:
                        self._from_thread(self._spawn, self._failed(job_id, "it could not start; please try again"))
                    admitted = []
                for job_id, _ in admitted:
                    started[job_id] = time.monotonic()
                    self._from_thread(self._running, job_id)
            if not decoder.rows:
                continue
            now = time.monotonic()
            for row in decoder.all_rows:  # parked ones too: they leave once back in the batch
                with self._lock:
                    cancelled = self._dropped(row.tag)
                if cancelled:
                    row.cancelled = True
                elif now - started.get(row.tag, now) > self.settings.job_timeout_s:
                    row.cancelled = True
                    self._from_thread(self._spawn, self._failed(row.tag, "it took too long; try a shorter piece"))
            try:
                finished = decoder.step()
            except Exception:  # never let one bad step stop every user's music
                log.exception("generation step failed; failing the rows in the batch")
                for row in decoder.all_rows:
                    started.pop(row.tag, None)
                    reported.pop(row.tag, None)
                    self._from_thread(self._spawn, self._failed(row.tag, "the composer hit an error; please try again"))
                decoder = new_decoder()
                continue
            for row in finished:
                started.pop(row.tag, None)
                reported.pop(row.tag, None)
                if not row.cancelled:
                    self._from_thread(
                        self._spawn, self._generated(row.tag, list(row.tokens), row.request, row.prompt_length)
                    )
            now = time.monotonic()
            for row in decoder.rows:
                if now - reported.get(row.tag, 0.0) >= self.settings.progress_interval_s:
                    reported[row.tag] = now
                    done, total = tokens_done_and_expected([row])
                    elapsed = now - started.get(row.tag, now)
                    eta = elapsed * (total - done) / done if done else None
                    self._from_thread(self._progress, row.tag, done, total, eta)

    def _admit(self, decoder: BatchDecoder, held: list[Queued]) -> list[Queued] | None:
        """The jobs that join the batch at this step, up to max_batch (fewer once a step ran out
        of memory: BatchDecoder.room): held ones whose user is free again first, then new
        arrivals; a job whose user already has running_per_user in the batch is held back (so
        one user's several tracks cannot crowd out everyone else's). Waits a little for work
        when there is none. None: the runner is stopping."""
        rows, room = decoder.all_rows, decoder.room(self.settings.max_batch)
        admitted: list[Queued] = []
        busy: Counter[tuple[str, str] | None] | None = None  # counted only once something may join

        def admit(item: Queued) -> bool:
            """False: hold it back. True: it joins, is rendered beside the batch, or is dropped
            (cancelled or ended meanwhile)."""
            nonlocal busy
            with self._lock:
                request = None if self._dropped(item[0]) else self._active.get(item[0])
                if request is None:
                    return True
                if busy is None:
                    busy = Counter(self._user_of(row.tag) for row in rows)
            if request.render is not None:  # nothing to compose: rendered at once, taking no row
                self._from_thread(self._spawn, self._render_again(item[0], list(request.render.tokens), item[1]))
                return True
            user = (request.platform, request.user_id)
            if busy[user] >= self.settings.running_per_user:
                return False
            busy[user] += 1
            admitted.append(item)
            return True

        for item in list(held):
            if len(admitted) >= room:
                return admitted
            if admit(item):
                held.remove(item)
        while len(admitted) < room:
            try:
                idle = not rows and not admitted
                item = self._incoming.get(timeout=0.2) if idle else self._incoming.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return None
            if not admit(item):
                held.append(item)
        return admitted

    def _user_of(self, job_id: int) -> tuple[str, str] | None:
        """Who asked for the job (call with the lock held); None once it has ended."""
        request = self._active.get(job_id)
        return None if request is None else (request.platform, request.user_id)

    # --- callbacks on the event loop -----------------------------------------------------------

    def _running(self, job_id: int) -> None:
        # Emitted here, in the order the thread reported it, before any progress; stored after.
        if job_id not in self._active:
            return
        with self._lock:
            if job_id in self._waiting:
                self._waiting.remove(job_id)
        self._emit(JobEvent(job_id, "running"))
        if not self._closed:
            task = self._loop.create_task(self._store_running(job_id))
            self._starts[job_id] = task
            task.add_done_callback(lambda t, j=job_id: self._start_written(j, t))

    def _start_written(self, job_id: int, task: asyncio.Task) -> None:
        """A 'running' write no one awaits is let go here: a job that ends without _stored_start
        (cancelled while composing, say) must not leave it behind."""
        if self._starts.get(job_id) is not task:
            return  # _stored_start took it, and reports how it went
        del self._starts[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s: could not store that it started", job_id, exc_info=task.exception())

    async def _stored_start(self, job_id: int) -> None:
        """Wait for the job's 'running' write, so its ending is never written before its start. A
        write that failed (a full disk, a database gone) is logged, not raised: the job goes on, and
        its ending still reaches the user."""
        task = self._starts.pop(job_id, None)
        if task is not None:
            try:
                await task
            except Exception:
                log.exception("job %s: could not store that it started", job_id)

    async def _store_running(self, job_id: int) -> None:
        try:
            job = await self.db.run(lambda s: start_job(s, job_id))
        except InvalidTransition:  # a regeneration of a running job (its attempt stands), or a cancel that won
            return
        if job_id in self._active:  # not ended (cancelled, released) while the start was written
            self._attempts[job_id] = job.attempts

    def _progress(self, job_id: int, done: int, total: int, eta: float | None) -> None:
        if job_id not in self._active:
            return
        self._emit(JobEvent(job_id, "running", done=done, total=total, eta_s=eta))
        now = time.monotonic()
        # one write a job at a time: while the database is out of reach, writes wait in retries,
        # and each second's would otherwise pile up behind them
        if now - self._last_db_progress.get(job_id, 0.0) >= 1.0 and job_id not in self._progress_writes:
            self._last_db_progress[job_id] = now
            self._progress_writes.add(job_id)
            self._spawn(self._store_progress(job_id, done / max(total, 1)))

    async def _store_progress(self, job_id: int, fraction: float) -> None:
        """A progress write that fails is lost, and only logged: the job goes on, and the next one
        (or its ending) writes over it."""
        try:
            await self.db.run(lambda s: set_progress(s, job_id, fraction))
        except Exception as exc:
            log.warning("job %s: progress not stored (%s)", job_id, exc.__class__.__name__)
        finally:
            self._progress_writes.discard(job_id)

    async def _failed(self, job_id: int, reason: str) -> None:
        await self._stored_start(job_id)
        try:
            await self.db.run(lambda s: fail_job(s, job_id, reason, self._attempts.get(job_id)))
        except InvalidTransition:  # it ended meanwhile (a cancel, already told), or was started again elsewhere
            if job_id in self._active:
                await self._end_as_stored(job_id, reason)
            return
        except Exception:  # the user hears of it all the same; a restart finds the job unfinished
            log.exception("job %s: could not store its failure", job_id)
        self._finish(job_id, JobEvent(job_id, "failed", reason=reason))

    async def _end_as_stored(self, job_id: int, reason: str) -> None:
        """End a job we still hold the way storage says it ended (failed with `reason` if it can't
        say); or let it go, if another worker has started it again since we did."""
        from storage import Job

        try:
            job = await self.db.run(lambda s: s.get(Job, job_id))
        except Exception:
            log.exception("job %s: could not read how it ended", job_id)
            job = None
        ended = job is not None and job.state in FINISHED
        mine = self._attempts.get(job_id)
        if job is not None and not ended and mine is not None:  # requeued, or started again, elsewhere
            log.warning("job %s was taken over by another worker; letting it go", job_id)
            self.release(job_id)
            return
        self._finish(job_id, JobEvent.stored(job) if ended else JobEvent(job_id, "failed", reason=reason))

    async def _generated(self, job_id: int, tokens: list[int], request: GenerationRequest, prompt_length: int) -> None:
        from generator.tokenizer import decode_notes
        from generator.track import regenerate

        if job_id not in self._active:
            return
        await self._stored_start(job_id)
        tries = self._tries.get(job_id, 1)
        new = tokens[prompt_length:]  # judged on what was composed, not on the genre, controls or primer
        again = regenerate(request, new, tries, self.settings.max_tries)
        if again is not None:
            log.info("job %s: the piece came out degenerate, composing it again (try %d)", job_id, tries + 1)
            self._tries[job_id] = tries + 1
            self._incoming.put((job_id, again))
            return
        if not decode_notes(new):  # silent every time: a track of nothing helps no one
            await self._failed(job_id, "the composer wrote only silence; please try again or pick another seed")
            return
        await self._render(job_id, tokens, request, prompt_length)

    async def _render_again(self, job_id: int, tokens: list[int], request: GenerationRequest) -> None:
        """A stored piece with another instrument: started, then rendered, nothing composed."""
        self._running(job_id)
        await self._stored_start(job_id)
        await self._render(job_id, tokens, request, prompt_length=0)

    async def _render(self, job_id: int, tokens: list[int], request: GenerationRequest, prompt_length: int) -> None:
        """Render and keep the piece, and end the job with the new track (or why there is none)."""
        compose = self._active.get(job_id)
        if compose is None:
            return  # cancelled while its start was being stored
        self._emit(JobEvent(job_id, "rendering"))
        try:
            track_id = await self._render_and_store(job_id, compose, tokens, request, prompt_length)
        except InvalidTransition:
            if job_id in self._active:  # not a cancel (that ended it already): its start was never stored
                await self._failed(job_id, STORAGE_TROUBLE)
            return
        except Exception as exc:
            log.exception("job %s failed while rendering or storing", job_id)
            await self._failed(job_id, failure_reason(exc))
            return
        self._finish(job_id, JobEvent(job_id, "done", track_id=track_id))

    async def _render_and_store(
        self, job_id: int, compose: ComposeRequest, tokens: list[int], request: GenerationRequest, prompt_length: int
    ) -> int:
        from generator.instruments import instrument_program
        from generator.render import Tags
        from generator.track import Recipe, track_title

        attempt = self._attempts.get(job_id)  # now: a job let go while it renders loses it from the dict
        assert self.loaded is not None  # a job renders only after start() loaded the model
        piece = compose.render
        composer = (piece.model, piece.checkpoint_sha256) if piece else (self.loaded.name, self.loaded.sha256)
        # a stored piece rendered again names no device: where it was composed is not stored
        device = "cpu" if piece else self.loaded.placement.label
        recipe = Recipe.of(
            request,
            *composer,
            instrument=compose.instrument,
            primer=compose.primer_ref,
            arrangement=compose.arranged,
            device=device,
        )
        title = track_title(request.genre, job_id)
        files = await self._render_pool.render(
            tokens,
            Tags(title, recipe.genre, recipe.summary()),
            instrument_program(compose.instrument),
            seed=recipe.seed,
            primer_until=prompt_length if request.primer else None,
            arrangement=recipe.arrangement,
        )
        new = NewTrack(
            genre=recipe.genre,
            model_id=recipe.model,
            checkpoint_sha256=recipe.checkpoint_sha256,
            seed=recipe.seed,
            sampling=_sampling_dict(request),
            tokens=tokens,
            max_seconds=request.max_seconds,
            max_new_tokens=request.max_new_tokens,
            primer_ref=compose.primer_ref,
            instrument=compose.instrument,
            arrangement=recipe.arrangement,
            parent_id=compose.parent_track_id,
            lineage=compose.lineage,
            duration_s=files.seconds,
            note_count=files.notes,
        )
        track = await save_track(
            self.db,
            self.store,
            compose.platform,
            compose.user_id,
            new,
            files.mp3,
            files.midi,
            files.png,
            job_id=job_id,
            attempt=attempt,
        )
        return track.id


STORAGE_TROUBLE = "I could not keep your track (storage trouble on my side); please try again later"


def failure_reason(exc: Exception) -> str:
    """What to tell a user whose composed piece could not be rendered or kept (never internals)."""
    if out_of_space(exc):
        return "there is no room to keep your track right now (a full disk on my side); please try again later"
    if storage_trouble(exc):
        return STORAGE_TROUBLE
    return "rendering the track failed on my side; please try again"


def _sampling_dict(request: GenerationRequest) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(request.sampling)


__all__ = ["GeneratorError", "InProcessRunner", "RunnerSettings"]
