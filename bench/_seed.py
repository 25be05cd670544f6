"""Open jobs written straight into a fresh database with the bot's own store functions, as if
members had asked for them earlier (admission, hold, attempt rows and state), so a benchmark
can start the bot with thousands of jobs in flight without submitting them one by one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._common import BOT_SRC
from bot.db import Database, open_database
from bot.domain.job_state import RENDERING, JobState
from bot.domain.periods import period_keys
from bot.store import budgets as money
from bot.store import jobs as store
from bot.store.jobs import NewJob

DEADLINE = 6 * 3600


@dataclass(frozen=True)
class SeedJob:
    guild_id: int
    channel_id: int
    user_id: int
    provider: str
    state: str  # held | submitting | queued | running | ambiguous | succeeded | expired
    created_at: float  # wall clock
    estimate_micros: int = 0
    external_id: str | None = None
    seconds: int = 8
    prompt: str = "a paper boat on a canal"
    result_path: str | None = None
    result_size: int | None = None
    next_poll_at: float | None = None  # default: created_at (due at once)
    callback_token: str | None = None  # the provider was given /hooks/<provider>/<token> (webhooks on)


async def open_db(data_dir: Path, database_url: str | None = None) -> Database:
    """The bot's database (the SQLite file, or PostgreSQL at `database_url`), migrated with the
    migrations of the source tree the bot runs from."""
    db = await open_database(database_url, data_dir / "castbot.sqlite3")
    await db.migrate(BOT_SRC / "migrations")
    return db


async def seed_jobs(db: Database, jobs: Sequence[SeedJob], *, chunk: int = 1000) -> list[int]:
    """Insert the jobs (in order; ids are returned) with their holds and attempt rows."""
    ids: list[int] = []
    for start in range(0, len(jobs), chunk):
        async with db.transaction() as conn:
            for job in jobs[start : start + chunk]:
                ids.append(await _seed_one(conn, job))
    return ids


async def _seed_one(conn, job: SeedJob) -> int:
    now = job.created_at
    periods = period_keys(now)
    job_id = await store.insert(
        conn,
        NewJob(
            interaction_id=None,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            user_id=job.user_id,
            locale="en-US",
            prompt=job.prompt,
            request={
                "seconds": job.seconds,
                "orientation": "landscape",
                "quality": "standard",
                "characters": [],
                "requested_provider": None,
            },
            providers=(job.provider,),
            estimate_micros=job.estimate_micros,
            global_period=periods.global_month,
            guild_period=periods.guild_month,
            member_period=periods.member_day,
            deadline_at=now + DEADLINE,
        ),
        now,
    )
    scopes = money.job_scopes(job.guild_id, job.user_id, periods.global_month, periods.guild_month, periods.member_day)
    await money.hold(conn, job_id, scopes, job.estimate_micros, now)
    due = job.next_poll_at if job.next_poll_at is not None else now
    if job.state == "held":
        return job_id
    ref = await store.start_attempt(conn, job_id, job.provider, now)
    # the store allows only the bot's own moves: held -> submitting -> ... as a real job goes
    await store.transition(conn, job_id, (JobState.HELD,), JobState.SUBMITTING, now, callback_token=job.callback_token)
    if job.state == "submitting":
        return job_id
    if job.state == "ambiguous":
        await store.finish_attempt(conn, ref, "ambiguous", now, error_class="Ambiguous", error="read timeout")
        await store.transition(conn, job_id, (JobState.SUBMITTING,), JobState.AMBIGUOUS, now, next_poll_at=due)
        return job_id
    await store.finish_attempt(conn, ref, "accepted", now, external_id=job.external_id)
    fields: dict[str, object] = {"external_id": job.external_id, "next_poll_at": due, "progress": 0}
    if job.state == "succeeded":
        fields.update(result_path=job.result_path, result_size=job.result_size, progress=100, cost_micros=0)
    state, before = JobState(job.state), JobState.SUBMITTING
    if state not in RENDERING:  # succeeded or expired: the provider had it running first
        await store.transition(conn, job_id, (before,), JobState.RUNNING, now)
        before = JobState.RUNNING
    await store.transition(conn, job_id, (before,), state, now, **fields)
    if job.state == "succeeded":
        await money.settle(conn, job_id, scopes, job.estimate_micros, 0, now, reason="succeeded")
    return job_id


async def seed_history(db: Database, count: int, members: Sequence[tuple[int, int]]) -> None:
    """`count` finished (delivered) jobs of these (guild, member) pairs, from the last 30 days: the
    history a server that has been running for a while carries, which no query should mind."""
    if count <= 0 or not members:
        return
    now = time.time()
    rows = []
    for i in range(count):
        guild, user = members[i % len(members)]
        created = now - 30 * 86400 * (i + 1) / count
        periods = period_keys(created)
        rows.append(
            (
                guild,
                guild + 1,
                user,
                "an old request",
                '{"characters": [], "orientation": "landscape", "quality": "standard", "seconds": 8}',
                "openai",
                "openai",
                periods.global_month,
                periods.guild_month,
                periods.member_day,
                created,
                created + 120,
                created + 120,
            )
        )
    async with db.transaction() as conn:
        async with conn.execute("SELECT COALESCE(MAX(id), 0) FROM jobs") as cursor:
            row = await cursor.fetchone()
        first = int(row[0]) if row else 0
        await conn.executemany(
            "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, request_json, providers, provider, state,"
            " estimate_micros, cost_micros, global_period, guild_period, member_period, created_at, updated_at,"
            " notified_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'delivered', 0, 0, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        # their ledger rows (free jobs: hold and release of 0), which the startup audit reads too
        for kind in ("hold", "release"):
            await conn.execute(
                "INSERT INTO ledger (job_id, kind, amount_micros, created_at)"
                f" SELECT id, '{kind}', 0, created_at FROM jobs WHERE id > ?",
                (first,),
            )


LEGACY_INDEXES = (
    "DROP INDEX IF EXISTS jobs_state_due",
    "DROP INDEX IF EXISTS jobs_unnotified_due",
    "DROP INDEX IF EXISTS jobs_guild_active",
    "CREATE INDEX IF NOT EXISTS jobs_open ON jobs (state, next_poll_at)"
    " WHERE state IN ('held', 'submitting', 'queued', 'running', 'ambiguous', 'succeeded', 'expired')",
    "CREATE INDEX IF NOT EXISTS jobs_unnotified ON jobs (state, next_poll_at)"
    " WHERE notified_at IS NULL AND state IN ('succeeded', 'rejected', 'failed', 'canceled')",
)


async def legacy_indexes(db: Database) -> None:
    """Put the job indexes back as they were before migration 0005 (to measure the difference)."""
    async with db.transaction() as conn:
        for statement in LEGACY_INDEXES:
            await conn.execute(statement)
