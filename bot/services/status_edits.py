"""Edits of jobs' status messages, paced per channel, in background tasks of their own.

The delivery loop hands over the jobs whose status message has something new to show
(`DeliveryService.status_changes`); this module decides what is worth an edit and when, within
Discord's limits, so a busy channel (or one answering 429) holds up only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from bot.domain.job_state import UNFINISHED, JobState
from bot.domain.jobs import Job
from bot.store import jobs as store
from bot.store.jobs import StatusChange

log = logging.getLogger(__name__)

# Discord allows about 5 message edits per 5 s in a channel and 50 requests/s for the whole bot;
# edits get part of the latter, posts and interaction replies need the rest.
CHANNEL_EDITS = 5
CHANNEL_WINDOW = 5.0
EDITS_PER_SECOND = 20.0
FORGET_AFTER = 3600.0  # a job not seen changing for this long is forgotten (it gets edited again if it moves)
SWEEP_EVERY = 60.0
# Edits follow a job while it is UNFINISHED. A finished job's last edit is made when its final
# message is posted; a canceled one has no final message, so its edit is queued here.

Fetch = Callable[[int], Awaitable[Job | None]]
Edit = Callable[[Job, bool], Awaitable[bool]]  # (job, final) -> whether Discord took the edit


def progress_step(progress: int | None) -> int | None:
    return None if progress is None else progress // store.PROGRESS_STEP


@dataclass
class _Shown:
    """What a job's status message shows (as far as we know)."""

    state: JobState
    step: int | None
    edited_at: float
    seen_at: float


@dataclass
class _Channel:
    urgent: dict[int, None] = field(default_factory=dict)  # state changes, oldest first
    later: dict[int, float] = field(default_factory=dict)  # progress steps: job -> not before
    sent: deque[float] = field(default_factory=deque)  # when its edits of the last window went out
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    users: int = 0  # final edits waiting for a turn

    def idle(self, now: float, window: float) -> bool:
        working = self.task is not None and not self.task.done()
        recent = bool(self.sent) and self.sent[-1] > now - window
        return not (self.urgent or self.later or working or self.users or recent)


class StatusEdits:
    """Edits of jobs' status messages, made in background tasks, never in the loop's pass.

    `offer` (synchronous, called by the loop) keeps the changes a member would see and queues
    them per channel: state changes first, a new progress step at most every `progress_every`
    seconds per job. One task per channel with work makes its edits one at a time, at most
    `per_channel` per `window` and, all channels together, `per_second`: a busy or rate-limited
    channel delays only itself. Each edit reads the job afresh, so changes queued meanwhile
    coalesce into one edit showing the latest. A job's final edit (`final_turn`) waits for any
    edit of it in flight, so an older state can never land after the final one.

    Memory stays bounded: a job is forgotten when it finishes (or after FORGET_AFTER without a
    change), a channel once idle for a window.
    """

    def __init__(
        self,
        fetch: Fetch,
        edit: Edit,
        *,
        per_channel: int | None = None,
        window: float | None = None,
        per_second: float | None = None,
        progress_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._edit = edit
        # read at construction (not as default values) so tests can turn the module's pace up
        self.per_channel = CHANNEL_EDITS if per_channel is None else per_channel
        self.window = CHANNEL_WINDOW if window is None else window
        self.per_second = EDITS_PER_SECOND if per_second is None else per_second
        self.progress_every = progress_every
        self._clock = clock
        self._channels: dict[int, _Channel] = {}
        self._shown: dict[int, _Shown] = {}
        self._queued: dict[int, int] = {}  # job -> its channel, while queued
        self._busy: dict[int, asyncio.Event] = {}  # job -> set when the edit in progress ends
        self._closing: set[int] = set()  # jobs whose final edit is under way
        self._next_slot = 0.0
        self._swept = clock()

    @property
    def tracked(self) -> tuple[int, int]:
        """(jobs remembered, channels remembered): both must stay bounded."""
        return len(self._shown), len(self._channels)

    def offer(self, changes: Iterable[StatusChange]) -> None:
        now = self._clock()
        for change in changes:
            shown = self._shown.get(change.job_id)
            step = progress_step(change.progress)
            if shown is not None:
                shown.seen_at = now
            if change.state == JobState.CANCELED:
                self._queue(change.channel_id, change.job_id, urgent=True)
            elif change.state not in UNFINISHED:
                self._forget(change.job_id)  # finished: posting its result makes the last edit
            elif shown is None:
                if change.state == JobState.HELD:  # the message was posted showing exactly this
                    self._shown[change.job_id] = _Shown(JobState.HELD, step, now, now)
                else:
                    self._queue(change.channel_id, change.job_id, urgent=True)
            elif shown.state != change.state:
                self._queue(change.channel_id, change.job_id, urgent=True)
            elif shown.step != step:
                self._queue(change.channel_id, change.job_id, not_before=shown.edited_at + self.progress_every)
        if now - self._swept >= SWEEP_EVERY:
            self._sweep(now)

    @contextlib.asynccontextmanager
    async def final_turn(self, channel_id: int, job_id: int) -> AsyncIterator[None]:
        """Make the job's last edit inside this block: after any edit of it in flight, and paced."""
        self._closing.add(job_id)
        self._unqueue(job_id)
        channel = self._channel(channel_id)
        channel.users += 1
        try:
            busy = self._busy.get(job_id)
            if busy is not None:
                await busy.wait()
            await self._turn(channel)
            yield
        finally:
            channel.users -= 1
            self._closing.discard(job_id)
            self._forget(job_id)

    async def close(self) -> None:
        tasks = [c.task for c in self._channels.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._channels.clear()

    # --- queues -------------------------------------------------------------------------------

    def _channel(self, channel_id: int) -> _Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = self._channels[channel_id] = _Channel()
        return channel

    def _queue(self, channel_id: int, job_id: int, *, urgent: bool = False, not_before: float = 0.0) -> None:
        if job_id in self._closing:
            return
        channel = self._channel(channel_id)
        if urgent:
            channel.later.pop(job_id, None)
            channel.urgent[job_id] = None
        elif job_id not in channel.urgent:
            channel.later.setdefault(job_id, not_before)
        self._queued[job_id] = channel_id
        channel.wake.set()
        if channel.task is None or channel.task.done():
            channel.task = asyncio.create_task(self._work(channel), name=f"status-edits-{channel_id}")

    def _unqueue(self, job_id: int) -> None:
        channel_id = self._queued.pop(job_id, None)
        channel = self._channels.get(channel_id) if channel_id is not None else None
        if channel is not None:
            channel.urgent.pop(job_id, None)
            channel.later.pop(job_id, None)

    def _forget(self, job_id: int) -> None:
        self._unqueue(job_id)
        self._shown.pop(job_id, None)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for job_id in [j for j, s in self._shown.items() if now - s.seen_at > FORGET_AFTER]:
            del self._shown[job_id]
        for channel_id in [c for c, ch in self._channels.items() if ch.idle(now, self.window)]:
            del self._channels[channel_id]

    def _take(self, channel: _Channel) -> tuple[int | None, float | None]:
        """The next job to edit, or how long until one is due (None: nothing queued)."""
        if channel.urgent:
            job_id = next(iter(channel.urgent))
            del channel.urgent[job_id]
        elif channel.later:
            job_id, due = min(channel.later.items(), key=lambda item: item[1])
            wait = due - self._clock()
            if wait > 0:
                return None, wait
            del channel.later[job_id]
        else:
            return None, None
        self._queued.pop(job_id, None)
        return job_id, 0.0

    # --- the work -----------------------------------------------------------------------------

    async def _work(self, channel: _Channel) -> None:
        while True:
            channel.wake.clear()
            job_id, wait = self._take(channel)
            if job_id is None:
                if wait is None:
                    return  # the channel (and its recent edits) stays known until swept
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.wake.wait(), wait)
                continue
            await self._edit_one(channel, job_id)

    async def _edit_one(self, channel: _Channel, job_id: int) -> None:
        done = self._busy[job_id] = asyncio.Event()
        try:
            job = await self._fetch(job_id)
            if job is None or job.status_message_id is None or job_id in self._closing:
                return
            final = job.state == JobState.CANCELED
            if not final and job.state not in UNFINISHED:
                self._forget(job_id)  # finished meanwhile: posting its result makes the last edit
                return
            step = progress_step(job.progress)
            shown = self._shown.get(job_id)
            unchanged = shown is not None and (shown.state, shown.step) == (job.state, step)
            just_posted = shown is None and job.state == JobState.HELD  # posted showing exactly this
            if not final and (unchanged or just_posted):
                return
            stamp = await self._turn(channel)
            if job_id in self._closing:  # its final edit started while we waited: leave it the turn
                channel.sent.remove(stamp)
                return
            if await self._edit(job, final):
                now = self._clock()
                if final:
                    self._forget(job_id)
                else:
                    self._shown[job_id] = _Shown(job.state, step, now, now)
        except Exception:
            log.exception("editing the status message of job %d failed", job_id)
        finally:
            done.set()
            if self._busy.get(job_id) is done:
                del self._busy[job_id]

    async def _turn(self, channel: _Channel) -> float:
        """Wait until the channel's and the bot's pace allow one more edit; returns its stamp."""
        while True:
            now = self._trim(channel)
            if len(channel.sent) >= self.per_channel:
                await asyncio.sleep(channel.sent[0] + self.window - now)
                continue
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.per_second
            if slot > now:
                await asyncio.sleep(slot - now)
                # a final edit may have taken the channel's last place meanwhile
                now = self._trim(channel)
                if len(channel.sent) >= self.per_channel:
                    continue
            channel.sent.append(now)
            return now

    def _trim(self, channel: _Channel) -> float:
        now = self._clock()
        while channel.sent and channel.sent[0] <= now - self.window:
            channel.sent.popleft()
        return now
