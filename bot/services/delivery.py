"""What the delivery loop owes the channel: the final post (exactly once) and status-message edits.

The loop posts a job's final message with a nonce derived from the job id; Discord returns the
earlier message for a repeated nonce, so a crash between posting and `mark_posted` cannot make a
second post. A job leaves the pending list only when `mark_posted`/`give_up` commits.

Status messages are edited by `bot.services.status_edits.StatusEdits`, never inside the loop's
pass: the loop only reads which jobs changed since it last looked (`status_changes`, stamped by
migration 0006) and hands them over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.db import Database
from bot.domain.job_state import FINISHED, JobState
from bot.domain.jobs import Job
from bot.services.guilds import GuildService
from bot.services.metrics import Metrics
from bot.store import jobs as store
from bot.store.jobs import StatusChange

log = logging.getLogger(__name__)

RETRY_SECONDS = (5.0, 15.0, 60.0, 300.0)
MAX_POST_TRIES = 8


class DeliveryService:
    def __init__(
        self,
        db: Database,
        guilds: GuildService,
        configured: tuple[str, ...],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._guilds = guilds
        self._configured = configured
        self._clock = clock
        self._tries: dict[int, int] = {}
        self.metrics: Metrics | None = None  # the lag from settlement to the post (bot/app.py)
        self._status_seq: int | None = None

    async def pending(self, limit: int = 50) -> list[Job]:
        """Finished jobs whose final message has not been posted yet, due now."""
        return await store.unnotified(self._db, FINISHED, self._clock(), limit)

    async def job(self, job_id: int) -> Job | None:
        return await store.get(self._db, job_id)

    async def fallback_would_help(self, job: Job) -> bool:
        """Whether /settings fallback could have saved this failed job: the member named no
        provider, fallback is off, and a provider the server allows was never tried."""
        if job.state != JobState.FAILED or job.request.get("requested_provider") is not None:
            return False
        guild = await self._guilds.get(job.guild_id)
        if guild.fallback:
            return False
        allowed = [p for p in guild.providers or self._configured if p in self._configured]
        return any(p not in job.providers for p in allowed)

    async def held_due(self, per_provider: int) -> list[tuple[int, str | None]]:
        """(job id, provider) of held jobs due for dispatch, at most `per_provider` per provider."""
        return await store.held_due_by_provider(self._db, self._clock(), per_provider)

    async def watch_status_changes(self) -> None:
        """From now on `status_changes` reports changes made after this call (not the history)."""
        self._status_seq = await store.last_status_seq(self._db)

    async def status_changes(self, limit: int = 1000) -> list[StatusChange]:
        """Jobs whose status message may need an edit, changed since the last call, oldest first."""
        if self._status_seq is None:
            await self.watch_status_changes()
        assert self._status_seq is not None
        changes = await store.status_changes(self._db, self._status_seq, limit)
        if changes:
            self._status_seq = changes[-1].seq
        return changes

    async def mark_posted(self, job_id: int, message_id: int | None) -> None:
        now = self._clock()
        async with self._db.transaction() as conn:
            moved = await store.transition(conn, job_id, (JobState.SUCCEEDED,), JobState.DELIVERED, now)
            await store.update_fields(conn, job_id, now, notified_at=now, result_message_id=message_id)
        self._tries.pop(job_id, None)
        if moved and self.metrics is not None:
            # settled (captured and released when the tracker saw it succeed) -> posted
            settled = await self._db.fetchone(
                "SELECT created_at FROM ledger WHERE job_id = ? AND kind = 'release'", (job_id,)
            )
            if settled is not None:
                self.metrics.delivered(now - float(settled["created_at"]))

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
