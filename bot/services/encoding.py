"""Re-encoding off the event loop: a bounded pool of threads, one per concurrent encode.

PyAV releases the GIL while it decodes and encodes, so threads run encodes in parallel and the
event loop keeps answering Discord. `ENCODE_WORKERS` bounds how many run at once; further
requests wait their turn in the pool's queue.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bot.media.fit import CannotFit, FitResult, TooLong, fit_video, probe, verify
from bot.services.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fitted:
    """The outcome of fitting one video: the copy, or why there is none."""

    result: FitResult | None
    too_long: bool = False  # no copy because even 480p would not fit (else: it failed)


def fitted_path(original: Path) -> Path:
    """Where the fitted copy of `original` lives: next to it (`<name>.fit.mp4`), the original kept."""
    return original.with_name(f"{original.stem}.fit.mp4")


class EncodingService:
    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self.in_flight = 0  # fits asked for and not finished: min(in_flight, workers) run, the rest wait
        self.metrics: Metrics | None = None  # told the queue's length (bot/app.py)

    @property
    def running(self) -> int:
        return min(self.in_flight, self.workers)

    @property
    def waiting(self) -> int:
        return max(0, self.in_flight - self.workers)

    def _count(self, delta: int) -> None:
        self.in_flight += delta
        if self.metrics is not None:
            self.metrics.encode_queue(self.running, self.waiting)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="encode")
        return self._pool

    async def fit(self, original: Path, limit: int) -> Fitted:
        """A copy of `original` of at most `limit` bytes, verified to play; reused if already made
        (a post retried after a restart does not encode twice)."""
        self._count(+1)
        try:
            return await self._fit(original, limit)
        finally:
            self._count(-1)

    async def _fit(self, original: Path, limit: int) -> Fitted:
        dest = fitted_path(original)
        pool = self._executor()
        loop = asyncio.get_running_loop()
        if dest.exists() and 0 < dest.stat().st_size <= limit:
            try:
                source = await loop.run_in_executor(pool, probe, original)
                result = await loop.run_in_executor(pool, verify, dest, limit, source)
                return Fitted(result)
            except Exception:
                log.info("an earlier fitted copy of %s is not usable; encoding again", original.name)
        try:
            result = await loop.run_in_executor(pool, fit_video, original, dest, limit)
        except CannotFit as exc:
            log.info("%s cannot be fitted under %d bytes: %s", original.name, limit, exc)
            return Fitted(None, too_long=isinstance(exc, TooLong))
        except Exception:  # a bug or a full disk: post the link rather than nothing
            log.exception("fitting %s failed", original.name)
            return Fitted(None)
        return Fitted(result)

    def close(self) -> None:
        """Drop the encodes still waiting; one in progress finishes in its thread. A later `fit`
        starts a new pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
