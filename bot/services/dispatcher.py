"""How many held jobs are being sent to their providers at once, and the tasks that send them.

Each submission takes the database's single writer several times: hundreds at once (a burst of
/generate) would make every reply wait for the writer. So at most `per_provider` jobs per
provider and `total` in all are in flight; the others stay held and start as slots free up (each
finished dispatch wakes the delivery loop, which calls `fill` again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

DISPATCH_PER_PROVIDER = 8
DISPATCH_TOTAL = 16


class HeldJobs(Protocol):  # DeliveryService
    async def held_due(self, per_provider: int) -> list[tuple[int, str | None]]: ...


class Sender(Protocol):  # GenerationService
    async def dispatch(self, job_id: int) -> object: ...


class Dispatcher:
    def __init__(
        self,
        held: HeldJobs,
        sender: Sender,
        wake: Callable[[], None],
        *,
        retry_after: float,
        per_provider: int = DISPATCH_PER_PROVIDER,
        total: int = DISPATCH_TOTAL,
    ) -> None:
        self._held = held
        self._sender = sender
        self._wake = wake
        self._retry_after = retry_after
        self.per_provider = per_provider
        self.total = total
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._provider: dict[int, str | None] = {}

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def fill(self) -> None:
        """Start a dispatch task for each held job that is due, within the caps."""
        if len(self._tasks) >= self.total:
            return
        busy = Counter(self._provider.values())
        # a job being dispatched can still read as held: ask for enough to fill every free slot
        for job_id, provider in await self._held.held_due(2 * self.per_provider):
            if len(self._tasks) >= self.total:
                break
            if job_id in self._tasks or busy[provider] >= self.per_provider:
                continue
            busy[provider] += 1
            self._provider[job_id] = provider
            self._tasks[job_id] = asyncio.create_task(self._dispatch(job_id), name=f"dispatch-{job_id}")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _dispatch(self, job_id: int) -> None:
        try:
            await self._sender.dispatch(job_id)
        except Exception:
            log.exception("dispatching job %d failed; it stays held and will be retried", job_id)
            await asyncio.sleep(self._retry_after)
        finally:
            self._tasks.pop(job_id, None)
            self._provider.pop(job_id, None)
            self._wake()
