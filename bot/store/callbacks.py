"""Callback tokens: find the job a provider's callback names and bring its next status check forward.

Nothing else about the job is touched: the tracker reads the job's state from the provider as
usual, so a callback can only make it look sooner."""

from __future__ import annotations

from bot.db import Database
from bot.domain.job_state import POLLED, ordered


async def job_for_token(db: Database, provider: str, token: str) -> int | None:
    """The job whose current attempt with `provider` was given `token`, if any."""
    row = await db.fetchone("SELECT id FROM jobs WHERE callback_token = ? AND provider = ?", (token, provider))
    return None if row is None else int(row["id"])


async def poke(db: Database, job_id: int, at: float, now: float) -> bool:
    """Look at the job no later than `at` (>= now), if it is still polled; False when it is not (a late
    callback). updated_at is left alone: nothing about the job changed.

    A job already due is given `at` too: the tracker may be reading it right now, from before the
    render ended, and it keeps a next_poll_at that moved meanwhile (`record_progress`)."""
    states = ordered(POLLED)
    changed = await db.execute(
        "UPDATE jobs SET next_poll_at = CASE WHEN next_poll_at > ? AND next_poll_at < ? THEN next_poll_at ELSE ? END"
        f" WHERE id = ? AND state IN ({','.join('?' for _ in states)})",
        (now, at, at, job_id, *states),
    )
    return changed == 1
