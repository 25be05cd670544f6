"""The tracking side of the loop: poll providers, reconcile ambiguous submits, download and settle.

One pass (`poll_once`) looks only at jobs whose `next_poll_at` is due, groups them by provider
(batched status calls where the provider allows), and schedules each job's next look from the
provider's hint, clamped to POLL_MIN/POLL_MAX — there are no per-job sleeps. Any failure is
contained to its job or provider: the pass always completes.

Cost at scale (bench/tracking_scale.py): a job that reports progress is next looked at when it
should be done, never sooner than the provider's hint; a batch-status provider's partial batch
is topped up with the jobs due next, so its requests go out full; a list-status provider (openai)
is asked about all its jobs in flight whenever one is due, at most once per POLL_MIN, one walk of
its job list answering a hundred jobs a request; the results of a batch are applied concurrently
(downloads bounded per provider) and the progress of a whole pass is written in one transaction.

Passes overlap (`start_pass`): the loop starts one whenever it wakes — a provider's callback, a job
falling due — in a task of its own, so a job woken while a long pass runs (other jobs' downloads,
a slow provider) is polled at once instead of after it. A job is held by one pass at a time (the
in-flight set) until its settlement or progress is written; the per-provider limits are shared by
all passes. A finished job's download and settlement run in a task of their own, so a pass ends
once its status reads are done; the settlement wakes the loop, which starts the post at once. A
job its provider called back about (`urgent`) gets a pass of its own at once, past MAX_PASSES, and
its status read goes ahead of safety polls in the provider's limit (`Slots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.db import Database, Row
from bot.domain.job_state import POLLED, RENDERING, TRACKED, JobState
from bot.domain.jobs import Job
from bot.faults import crash_point
from bot.media import sha256_file
from bot.providers.base import (
    AuthFailed,
    CharacterRef,
    JobSnapshot,
    JobStatus,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Rejected,
    RejectReason,
    StatusIncomplete,
    VideoProvider,
)
from bot.services.budget import BudgetService
from bot.services.characters import CharacterService
from bot.services.health import HealthService
from bot.services.job_outcome import outcome_of
from bot.services.job_request import characters_of, request_of
from bot.services.metrics import Metrics
from bot.store import jobs as store

log = logging.getLogger(__name__)

BATCH = 50
LIST_TAKE_ALONG = 5000  # at most this many jobs in flight join a list-status walk
DOWNLOADS_PER_PROVIDER = 8  # concurrent video downloads per provider (each streams to disk)
MAX_MISSING_POLLS = 5  # the provider keeps saying it does not know the job
RELEASE_AFTER_EXPIRY = 24 * 3600  # an expired job's hold is kept this long in case it still bills
MAX_VIDEO_BYTES = 512 * 1024 * 1024
SAFETY_SPREAD = 0.2  # a called-back job's safety look comes 0.8-1.0 POLL_MAX after the last
GOLDEN = 0.6180339887  # job id -> an evenly spread fraction
MAX_PASSES = 8  # passes reading at once (each holds its own jobs); beyond, the loop waits for one to end


class Slots:
    """A semaphore whose urgent waiters go first: the status read of a job its provider just called
    back about does not queue behind the safety polls of a busy pass."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if self._free > 0 and not self._urgent and not self._normal:
            self._free -= 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue = self._urgent if urgent else self._normal
            queue.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed the slot as we were cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):  # not handed a slot: leave the queue
                        queue.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot goes straight to the next waiter
                    return
        self._free += 1


@dataclass
class PollReport:
    polled: int = 0
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: int = 0
    # still-running jobs' new progress and next look, written together at the end of the pass
    progress: list[store.Progress] = field(default_factory=list, compare=False, repr=False)
    # the ids of the jobs this pass holds (no other pass polls them until it ends)
    taken: set[int] = field(default_factory=set, compare=False, repr=False)
    # finished jobs' downloads and settlements, each in a task holding its job until it is settled
    finishing: list[asyncio.Task[None]] = field(default_factory=list, compare=False, repr=False)


class Tracker:
    def __init__(
        self,
        db: Database,
        providers: Mapping[str, VideoProvider],
        characters: CharacterService,
        budget: BudgetService,
        health: HealthService,
        videos_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        poll_min: float = 2.0,
        poll_max: float = 30.0,
        per_provider_concurrency: int = 4,
        reconcile_grace: float = 120.0,
        metrics: Metrics | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        # wakes the loop: a job settled (post it now) or a pass ended (its jobs are free again)
        self._wake = wake
        self._in_flight: set[int] = set()  # jobs held by a running pass
        self._passes: set[asyncio.Task[None]] = set()
        self._finishing: set[asyncio.Task[None]] = set()
        self._deferred = False  # a pass was not started because MAX_PASSES were running
        self._metrics = metrics
        # When the last pass finished (Unix time), for /healthz: the loop is alive
        self.last_pass_at: float | None = None
        self._providers = providers
        self._characters = characters
        self._budget = budget
        self._health = health
        self._videos = videos_dir
        self._clock = clock
        self._poll_min = poll_min
        self._poll_max = max(poll_max, poll_min)
        self._reconcile_grace = reconcile_grace
        self._limits: defaultdict[str, Slots] = defaultdict(lambda: Slots(per_provider_concurrency))
        self._urgent: set[int] = set()  # jobs their provider called back about, not read since
        self._downloads: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(DOWNLOADS_PER_PROVIDER)
        )
        self._tracked: dict[str, int] = {}  # jobs polled per provider, refreshed every POLL_MIN
        self._tracked_at = float("-inf")
        self._walked: dict[str, float] = {}  # list-status provider -> when its list was last walked
        self._walk_size: dict[str, int] = {}  # list-status provider -> jobs asked about in that walk

    def _interval(self, job: Job, hint: float | None, progress: int | None = None, sharing: int = 1) -> float:
        """When to look at a job again, inside [POLL_MIN, POLL_MAX].

        A provider's hint is the soonest we look at a job on its own. A job reporting progress is
        looked at when its rate so far says it will be done: a long render costs a few requests,
        not one per hint. Otherwise back off as the job ages. When `sharing` jobs split each
        status request (a batch, a list walk), a look costs a fraction of a request: the hint,
        which paces requests about one job, no longer holds it back, and the back-off is
        proportionally shorter. A job the provider will call back about is looked at every
        POLL_MAX, a safety pace: the callback brings its next look forward (bot/services/webhooks.py);
        spread over its last fifth by job id, so jobs all read at once (a restart) do not come due
        together again every POLL_MAX, a wave that would delay the callbacks arriving meanwhile."""
        if job.callback_token is not None:
            return self._poll_max * (1 - SAFETY_SPREAD * ((job.id * GOLDEN) % 1))
        floor = max(self._poll_min, hint or 0.0) if sharing <= 1 else self._poll_min
        age = max(0.0, self._clock() - job.created_at)
        if progress is not None and 0 < progress < 100:
            wanted = age * (100 - progress) / progress
        elif hint is not None:
            wanted = hint
        else:
            wanted = age * 0.1 / max(1, sharing)
        return min(self._poll_max, max(floor, wanted))

    def _sharing(self, provider: VideoProvider) -> int:
        """How many jobs one status request of `provider` covers (its batches go out full)."""
        caps = provider.capabilities
        if caps.status_by_list:
            return self._walk_size.get(provider.name, 1)
        if not caps.batch_status:
            return 1
        return max(1, min(BATCH, self._tracked.get(provider.name, 1)))

    @property
    def in_flight(self) -> frozenset[int]:
        """The jobs some pass is polling now (due, but not waiting for the loop)."""
        return frozenset(self._in_flight)

    async def start_pass(self) -> None:
        """Start a pass over the due jobs no running pass holds, in a task of its own, and return.
        Jobs their provider called back about get a pass of their own at once, whatever else runs:
        a wave of due jobs (all polled POLL_MAX after a restart) never makes them wait."""
        called_back = self._urgent - self._in_flight
        if called_back:
            self._spawn(self._background_pass(called_back), self._finishing)
        if len(self._passes) >= MAX_PASSES:
            self._deferred = True  # the next pass to end wakes the loop
            return
        self._spawn(self._background_pass(), self._passes)

    @staticmethod
    def _spawn(work: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> None:
        task = asyncio.create_task(work, name="tracking-pass")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _background_pass(self, only: set[int] | None = None) -> None:
        try:
            await self._pass(only)
        except Exception:  # poll_once contains its jobs' failures; this is a database hiccup
            log.exception("tracking pass failed; its jobs are polled again by a later one")
        finally:
            if self._deferred:
                self._deferred = False
                self._notify()

    async def close(self) -> None:
        """Cancel the running passes (shutdown): their jobs stay due and are polled after a restart."""
        passes = [*self._passes, *self._finishing]
        for task in passes:
            task.cancel()
        for task in passes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def urgent(self, job_id: int) -> None:
        """The provider called back about this job: its status read goes before safety polls."""
        if len(self._urgent) >= 10_000:
            self._urgent.clear()  # jobs called back about and never read again (ended otherwise)
        self._urgent.add(job_id)

    def _notify(self) -> None:
        if self._wake is not None:
            self._wake()

    def _take(self, jobs: list[Job], report: PollReport) -> list[Job]:
        """The jobs no other pass holds, now held by this one (no await between check and hold)."""
        free = [j for j in jobs if j.id not in self._in_flight]
        ids = {j.id for j in free}
        self._in_flight |= ids
        report.taken |= ids
        return free

    async def poll_once(self) -> PollReport:
        """One pass, returning once its finished jobs are downloaded and settled too."""
        report = await self._pass()
        await asyncio.gather(*report.finishing, return_exceptions=True)
        return report

    async def _pass(self, only: set[int] | None = None) -> PollReport:
        """Read the due jobs no other pass holds (of `only`, if given) and write their progress;
        finished jobs are still being downloaded (`report.finishing`) when it returns."""
        report = PollReport()
        try:
            await self._poll_once(report, only)
        finally:
            self._in_flight -= report.taken
        if report.taken & self._urgent:
            self._notify()  # a callback came for a job it held: poll that one now
        self.last_pass_at = time.time()
        if self._metrics is not None:
            self._metrics.tracked(self.last_pass_at)
        return report

    async def _poll_once(self, report: PollReport, only: set[int] | None = None) -> None:
        now = self._clock()
        due = self._take(await store.due(self._db, now, POLLED, exclude=self._in_flight, only=only), report)
        if only is not None:
            # not due any more (settled, or read since) and held by no pass: nothing left to hurry
            self._urgent -= only - report.taken - self._in_flight
        if not due:
            return
        if now - self._tracked_at >= self._poll_min:
            self._tracked = await store.count_by_provider(self._db, TRACKED)
            self._tracked_at = now
        groups: dict[str, list[Job]] = defaultdict(list)
        for job in due:
            groups[job.provider or ""].append(job)
        await asyncio.gather(*(self._poll_provider(name, jobs, report) for name, jobs in groups.items()))
        await self._record_progress(report)

    async def _record_progress(self, report: PollReport) -> None:
        if not report.progress:
            return
        try:
            async with self._db.transaction() as conn:
                await store.record_progress(conn, report.progress, self._clock())
        except Exception:
            # the jobs stay due and are simply polled again on the next pass
            report.errors += 1
            log.exception("could not record the progress of %d jobs; they will be polled again", len(report.progress))

    async def _poll_provider(self, name: str, jobs: list[Job], report: PollReport) -> None:
        provider = self._providers.get(name)
        if provider is None:
            for job in jobs:
                await self._guarded(job, report, self._missing(job, "provider no longer configured"))
            return
        tracked = [j for j in jobs if j.state != JobState.AMBIGUOUS and j.external_id]
        for job in (j for j in jobs if j.state == JobState.AMBIGUOUS):
            await self._guarded(job, report, self._reconcile(provider, job))
        caps = provider.capabilities
        size = BATCH if caps.batch_status else 1
        now = self._clock()
        if caps.batch_status and tracked and len(tracked) % size:
            # a request costs the same full or not: fill it with the jobs due next
            more = await store.due_next(
                self._db, name, TRACKED, now, now + self._poll_max, size - len(tracked) % size, exclude=self._in_flight
            )
            tracked += self._take(more, report)
        elif caps.status_by_list and tracked:
            # One walk of the provider's job list answers every job in flight for about a request
            # per hundred: when any is due, ask about all of them, at most once per POLL_MIN (jobs
            # falling due in between wait for the next walk, at most POLL_MIN).
            walked = self._walked.get(name, float("-inf"))
            if now - walked < self._poll_min:
                await self._postpone(tracked, walked + self._poll_min, report)
                tracked = []
            else:
                self._walked[name] = now
                asked = {j.id for j in tracked}
                # expired jobs keep their slow pace: only those being made are taken along
                everyone = await store.due_next(
                    self._db, name, RENDERING, -math.inf, math.inf, LIST_TAKE_ALONG, exclude=self._in_flight
                )
                tracked += self._take([j for j in everyone if j.id not in asked], report)
                # one status call for the lot: the walk goes as deep as the oldest of them needs
                size = max(1, len(tracked))
                self._walk_size[name] = len(tracked)
        chunks = [tracked[i : i + size] for i in range(0, len(tracked), size)]
        await asyncio.gather(*(self._poll_chunk(provider, chunk, report) for chunk in chunks))

    async def _postpone(self, jobs: list[Job], until: float, report: PollReport) -> None:
        try:
            async with self._db.transaction() as conn:
                await store.postpone(conn, [j.id for j in jobs], TRACKED, until)
        except Exception:
            report.errors += 1  # they stay due and join the next walk all the same
            log.exception("could not postpone %d jobs to the next walk", len(jobs))

    async def _poll_chunk(self, provider: VideoProvider, jobs: list[Job], report: PollReport) -> None:
        failure: Exception | None = None
        urgent = any(j.id in self._urgent for j in jobs)
        async with self._limits[provider.name].hold(urgent=urgent):
            self._urgent.difference_update(j.id for j in jobs)
            try:
                snapshots = await provider.status([j.external_id for j in jobs if j.external_id])
                self._count_status(provider.name, "ok")
            except StatusIncomplete as exc:
                self._count_status(provider.name, "partial")
                snapshots = exc.answered
                await self._status_failed(provider, [j for j in jobs if j.external_id not in snapshots], exc, report)
                jobs = [j for j in jobs if j.external_id in snapshots]
            except Exception as exc:
                self._count_status(provider.name, "error")
                failure = exc
        if failure is not None:
            if _one_by_one(provider, jobs, failure):
                # a list read failed: ask about each job on its own, so that one job the provider
                # chokes on (or a failing list) cannot hold up the others
                await asyncio.gather(*(self._poll_chunk(provider, [job], report) for job in jobs))
            else:
                await self._status_failed(provider, jobs, failure, report)
            return
        report.polled += len(jobs)
        await asyncio.gather(
            *(
                self._guarded(job, report, self._apply(provider, job, snapshots.get(job.external_id or ""), report))
                for job in jobs
            )
        )

    def _count_status(self, provider: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.status_request(provider, outcome)

    async def _status_failed(
        self, provider: VideoProvider, jobs: list[Job], exc: Exception, report: PollReport
    ) -> None:
        """The status of `jobs` could not be read: tell the breaker, look again after a back-off."""
        if not isinstance(exc, ProviderError):
            log.error("status call to %s failed unexpectedly", provider.name, exc_info=exc)
            for job in jobs:
                await self._guarded(job, report, self._backoff(job, None))
            return
        try:
            await self._health.record(provider.name, ok=False, error=exc, phase="poll")
        except Exception:  # the breaker writes to the database, which may be failing too
            report.errors += 1
            log.exception("could not record the failed status call to %s", provider.name)
        for job in jobs:
            await self._guarded(job, report, self._backoff(job, exc.retry_after))

    async def _guarded(self, job: Job, report: PollReport, work: object) -> None:
        """Run one job's step; an exception is logged and the job is simply looked at later."""
        assert asyncio.iscoroutine(work)
        try:
            await work
        except Exception:
            report.errors += 1
            log.exception("tracking job %d failed; will retry", job.id)
            try:
                await self._backoff(job, None)
            except Exception:
                log.exception("could not reschedule job %d", job.id)

    async def _backoff(self, job: Job, hint: float | None) -> None:
        async with self._db.transaction() as conn:
            await store.update_fields(
                conn, job.id, self._clock(), next_poll_at=self._clock() + self._interval(job, hint)
            )

    async def _apply(self, provider: VideoProvider, job: Job, snapshot: JobSnapshot | None, report: PollReport) -> None:
        now = self._clock()
        if snapshot is None:
            await self._missing(job, "the provider does not know this job")
            return
        if snapshot.status.terminal:
            ok = snapshot.status == JobStatus.SUCCEEDED or _users_fault(snapshot)
            await self._health.record(provider.name, ok=ok, error=None if ok else snapshot.error, phase="outcome")
        if snapshot.status == JobStatus.SUCCEEDED:
            # The download and settlement go on in a task holding only this job: the pass, and the
            # other jobs it holds (a callback for one of them waits for it), never wait for a video.
            report.taken.discard(job.id)
            task = asyncio.create_task(self._finish_held(provider, job, snapshot, report), name=f"finish-{job.id}")
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            report.finishing.append(task)
            return
        if snapshot.status == JobStatus.FAILED:
            error = snapshot.error or Rejected(provider.name, "the provider reported a failure")
            await self._finish_failure(job, error)
            report.failed.append(job.id)
            return
        if job.deadline_at is not None and now > job.deadline_at:
            await self._expire(job)
            return
        state = JobState.QUEUED if snapshot.status == JobStatus.QUEUED else JobState.RUNNING
        sharing = self._sharing(provider)
        hint = snapshot.poll_after
        if sharing <= 1 and provider.capabilities.poll_floor:
            hint = max(hint or 0.0, provider.capabilities.poll_floor)
        interval = self._interval(job, hint, snapshot.progress, sharing)
        report.progress.append(
            store.Progress(
                job_id=job.id,
                state=job.state,
                new_state=state if job.state in RENDERING else job.state,
                progress=snapshot.progress,
                next_poll_at=now + interval,
                seen_next_poll_at=job.next_poll_at,
            )
        )

    async def _finish_held(self, provider: VideoProvider, job: Job, snapshot: JobSnapshot, report: PollReport) -> None:
        try:
            await self._guarded(job, report, self._succeed(provider, job, snapshot, report))
        finally:
            self._in_flight.discard(job.id)

    async def _succeed(self, provider: VideoProvider, job: Job, snapshot: JobSnapshot, report: PollReport) -> None:
        if await self._finish_success(provider, job, snapshot):
            report.succeeded.append(job.id)

    async def _finish_success(self, provider: VideoProvider, job: Job, snapshot: JobSnapshot) -> bool:
        self._videos.mkdir(parents=True, exist_ok=True)
        dest = self._videos / f"job-{job.id}.mp4"
        try:
            async with self._downloads[provider.name]:
                result = await provider.download(snapshot, dest, MAX_VIDEO_BYTES)
        except Rejected as exc:
            # Made and billed, but we cannot fetch it: capture, and tell the member plainly.
            await self._settle(job, JobState.FAILED, provider.actual_cost(request_of(job), snapshot), error=exc)
            return False
        except ProviderError as exc:
            await self._backoff(job, exc.retry_after)
            return False
        digest = result.sha256 or await asyncio.to_thread(sha256_file, result.path)
        cost = provider.actual_cost(request_of(job), snapshot)
        shareable = provider.capabilities.shareable_results
        url = snapshot.download_url or ""
        link = url if shareable and url.startswith(("https://", "http://")) else None
        done = await self._settle(
            job,
            JobState.SUCCEEDED,
            cost,
            result_path=str(result.path),
            result_sha256=digest,
            result_size=result.size,
            result_url=link,
            progress=100,
        )
        if done:
            crash_point("after_download")
            log.info("job %d succeeded on %s (%d bytes, cost %d)", job.id, provider.name, result.size, cost)
        return done

    async def _settle(
        self, job: Job, state: JobState, cost: int, *, error: ProviderError | None = None, **fields: object
    ) -> bool:
        now = self._clock()
        captured = min(cost, job.estimate_micros)
        async with self._db.transaction() as conn:
            moved = await store.transition(
                conn,
                job.id,
                POLLED,
                state,
                now,
                cost_micros=captured,
                next_poll_at=now,
                error=error.message if error else None,
                error_code=error.code if error else None,
                **fields,
            )
            if moved:
                await self._budget.settle(conn, job.id, captured, now, reason=state)
        if moved:
            self._notify()  # post it now, not after this pass
        return moved

    async def _finish_failure(self, job: Job, error: ProviderError) -> None:
        state, error_code = outcome_of(error)
        now = self._clock()
        async with self._db.transaction() as conn:
            moved = await store.transition(
                conn,
                job.id,
                POLLED,
                state,
                now,
                error=error.message,
                next_poll_at=now,
                error_code=error_code,
            )
            if moved:
                await self._budget.release(conn, job.id, now, reason=f"{state}: {error.message}"[:200])
        if moved:
            self._notify()
        log.info("job %d %s: %s", job.id, state, error)

    async def _missing(self, job: Job, why: str) -> None:
        if job.poll_failures + 1 >= MAX_MISSING_POLLS:
            await self._finish_failure(job, Rejected(job.provider or "?", why, code="missing"))
            return
        now = self._clock()
        async with self._db.transaction() as conn:
            await store.update_fields(
                conn, job.id, now, poll_failures=job.poll_failures + 1, next_poll_at=now + self._interval(job, None)
            )

    async def _expire(self, job: Job) -> None:
        """Past the deadline: keep the hold (the provider may still bill) and poll slowly, then release."""
        now = self._clock()
        assert job.deadline_at is not None
        if now > job.deadline_at + RELEASE_AFTER_EXPIRY:
            await self._finish_failure(job, Rejected(job.provider or "?", "stuck past the deadline", code="expired"))
            return
        async with self._db.transaction() as conn:
            await store.transition(conn, job.id, POLLED - {JobState.EXPIRED}, JobState.EXPIRED, now)
            await store.update_fields(conn, job.id, now, next_poll_at=now + self._poll_max)

    async def _reconcile(self, provider: VideoProvider, job: Job) -> None:
        """An ambiguous submit: find the job it may have created; never submit again."""
        now = self._clock()
        if job.deadline_at is not None and now > job.deadline_at:
            await self._expire(job)
            return
        attempt = await self._last_attempt(job)
        attempt_ref = str(attempt["client_ref"]) if attempt else ""
        characters = await characters_of(self._characters, job)
        refs = [CharacterRef(c.key, c.asset, c.handles.get(provider.name)) for c in characters]
        request = request_of(job, refs, attempt_ref)
        try:
            external_id = await provider.reconcile(request)
        except ProviderError as exc:
            await self._backoff(job, exc.retry_after)
            return
        if external_id is None:
            sent_at = float(attempt["started_at"]) if attempt else job.created_at
            if provider.capabilities.authoritative_reconcile and now - sent_at > self._reconcile_grace:
                # The provider can list its jobs and ours is not there well after we sent it:
                # it never arrived. Release; never resubmit on our own.
                never = Rejected(provider.name, "the provider never received the request", code="not_received")
                await self._finish_failure(job, never)
                return
            await self._backoff(job, None)
            return
        async with self._db.transaction() as conn:
            if await store.transition(
                conn, job.id, (JobState.AMBIGUOUS,), JobState.RUNNING, now, external_id=external_id, next_poll_at=now
            ):
                await store.finish_attempt(conn, attempt_ref, "accepted", now, external_id=external_id)
        log.info("job %d reconciled: %s has it as %s", job.id, provider.name, external_id)

    async def _last_attempt(self, job: Job) -> Row | None:
        attempts = await store.attempts_for(self._db, job.id)
        return attempts[-1] if attempts else None


def _one_by_one(provider: VideoProvider, jobs: list[Job], failure: Exception) -> bool:
    """Whether a failed status read of several jobs is worth asking again job by job: yes for a
    list-status provider (its single lookups are separate requests), unless the whole account is
    refused or rate limited, where more requests would only make it worse."""
    caps = provider.capabilities
    return (
        len(jobs) > 1
        and caps.status_by_list
        and not caps.batch_status
        and not isinstance(failure, AuthFailed | QuotaExhausted | RateLimited)
    )


def _users_fault(snapshot: JobSnapshot) -> bool:
    """A refusal of the member's content says nothing about the provider's health."""
    return isinstance(snapshot.error, Rejected) and snapshot.error.reason in (
        RejectReason.MODERATION,
        RejectReason.INVALID,
    )
