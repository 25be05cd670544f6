"""What the delivery loop owes the channel, and recording that it was posted (exactly once).

The loop posts a job's final message with a nonce derived from the job id; Discord returns the
earlier message for a repeated nonce, so a crash between posting and `mark_posted` cannot make a
second post. A job leaves the pending list only when `mark_posted`/`give_up` commits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.db import Database
from bot.store import jobs as store
from bot.store.jobs import JobRow

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "rejected", "failed")
RETRY_SECONDS = (5.0, 15.0, 60.0, 300.0)
MAX_POST_TRIES = 8


class DeliveryService:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._tries: dict[int, int] = {}

    async def pending(self, limit: int = 50) -> list[JobRow]:
        """Finished jobs whose final message has not been posted yet, due now."""
        return await store.unnotified(self._db, FINISHED, self._clock(), limit)

    async def active_with_status(self) -> list[JobRow]:
        return await store.active_with_status_message(self._db)

    async def mark_posted(self, job_id: int, message_id: int | None) -> None:
        now = self._clock()
        async with self._db.transaction() as conn:
            await store.transition(conn, job_id, ("succeeded",), "delivered", now)
            await store.update_fields(conn, job_id, now, notified_at=now, result_message_id=message_id)
        self._tries.pop(job_id, None)

    async def retry_later(self, job_id: int) -> bool:
        """Schedule another try after a transient Discord error; False once we should stop trying."""
        tries = self._tries.get(job_id, 0) + 1
        self._tries[job_id] = tries
        if tries >= MAX_POST_TRIES:
            return False
        delay = RETRY_SECONDS[min(tries - 1, len(RETRY_SECONDS) - 1)]
        async with self._db.transaction() as conn:
            await store.update_fields(conn, job_id, self._clock(), next_poll_at=self._clock() + delay)
        return True
