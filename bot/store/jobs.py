"""Jobs and submission attempts. SQL only; state changes are compare-and-set on the current state,
and only the moves of `bot.domain.job_state.TRANSITIONS` are made."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.db import Connection, Database, Row, dialect
from bot.domain.job_state import ACTIVE, FINISHED, OPEN, JobState, check_moves, ordered
from bot.domain.jobs import Job
from bot.store.rows import mapped

log = logging.getLogger(__name__)

# A status message shows progress in steps of this many percent: migration 0006 stamps a job's
# `status_seq` when its progress crosses one (keep the two in step).
PROGRESS_STEP = 25


def job_of(row: Row) -> Job:
    """A jobs row as the domain's Job, column by column."""
    return Job(
        id=row["id"],
        interaction_id=row["interaction_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        user_id=row["user_id"],
        locale=row["locale"],
        prompt=row["prompt"],
        request=json.loads(row["request_json"]),
        providers=tuple(p for p in row["providers"].split(",") if p),
        provider=row["provider"],
        external_id=row["external_id"],
        state=JobState(row["state"]),
        progress=row["progress"],
        estimate_micros=row["estimate_micros"],
        cost_micros=row["cost_micros"],
        error_code=row["error_code"],
        error=row["error"],
        next_poll_at=row["next_poll_at"],
        poll_failures=row["poll_failures"],
        deadline_at=row["deadline_at"],
        status_message_id=row["status_message_id"],
        result_message_id=row["result_message_id"],
        notified_at=row["notified_at"],
        result_path=row["result_path"],
        result_sha256=row["result_sha256"],
        result_size=row["result_size"],
        result_url=row["result_url"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        callback_token=row["callback_token"],
    )


@dataclass(frozen=True)
class NewJob:
    interaction_id: int | None
    guild_id: int
    channel_id: int
    user_id: int
    locale: str | None
    prompt: str
    request: dict[str, Any]
    providers: tuple[str, ...]
    estimate_micros: int
    global_period: str
    guild_period: str
    member_period: str
    deadline_at: float


async def insert(conn: Connection, job: NewJob, now: float) -> int:
    cursor = await conn.execute(
        "INSERT INTO jobs (interaction_id, guild_id, channel_id, user_id, locale, prompt, request_json, providers,"
        " provider, state, estimate_micros, global_period, guild_period, member_period, next_poll_at, deadline_at,"
        " created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            job.interaction_id,
            job.guild_id,
            job.channel_id,
            job.user_id,
            job.locale,
            job.prompt,
            json.dumps(job.request, ensure_ascii=False, sort_keys=True),
            ",".join(job.providers),
            job.providers[0],
            JobState.HELD,
            job.estimate_micros,
            job.global_period,
            job.guild_period,
            job.member_period,
            now,
            job.deadline_at,
            now,
            now,
        ),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def get(conn: Connection | Database, job_id: int) -> Job | None:
    sql = "SELECT * FROM jobs WHERE id = ?"
    if isinstance(conn, Database):
        row = await conn.fetchone(sql, (job_id,))
    else:
        async with conn.execute(sql, (job_id,)) as cursor:
            row = await cursor.fetchone()
    return None if row is None else job_of(row)


async def by_interaction(conn: Connection, interaction_id: int) -> Job | None:
    async with conn.execute("SELECT * FROM jobs WHERE interaction_id = ?", (interaction_id,)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else job_of(row)


async def transition(
    conn: Connection,
    job_id: int,
    from_states: Iterable[JobState],
    to_state: JobState,
    now: float,
    **fields: Any,
) -> bool:
    """Move a job to `to_state` only if it is still in one of `from_states` (compare-and-set).
    Raises IllegalTransition, before any write, if one of the moves is not in the table."""
    sources = tuple(from_states)
    check_moves(sources, to_state)
    assignments = "".join(f", {name} = ?" for name in fields)
    cursor = await conn.execute(
        f"UPDATE jobs SET state = ?, updated_at = ?, version = version + 1{assignments}"
        f" WHERE id = ? AND state IN ({','.join('?' for _ in sources)})",
        (to_state, now, *fields.values(), job_id, *sources),
    )
    return cursor.rowcount == 1


def _one_of(states: Collection[JobState]) -> tuple[str, tuple[JobState, ...]]:
    """`state IN (...)` for a group of states: its placeholders and parameters, always in the same
    order (the migrations' indexes do not depend on it, but query plans and logs read the same)."""
    params = ordered(states)
    return f"state IN ({','.join('?' for _ in params)})", params


def _ids(db: Database, ids: Collection[int], *, among: bool) -> tuple[str, tuple[str, ...]]:
    """` AND id IN (...)` (or `NOT IN`, `among=False`) for a set of job ids of any size, as one JSON
    parameter."""
    if dialect(db) == "postgresql":
        listed = "SELECT CAST(value AS BIGINT) FROM jsonb_array_elements_text(CAST(? AS JSONB))"
    else:
        listed = "SELECT value FROM json_each(?)"
    return f" AND id {'' if among else 'NOT '}IN ({listed})", (json.dumps(sorted(ids)),)


def _not_in(db: Database, exclude: Collection[int]) -> tuple[str, tuple[str, ...]]:
    """` AND id NOT IN (...)`: the jobs being polled already are skipped; nothing when none are."""
    return _ids(db, exclude, among=False) if exclude else ("", ())


async def update_fields(conn: Connection, job_id: int, now: float, **fields: Any) -> None:
    assignments = ", ".join(f"{name} = ?" for name in fields)
    await conn.execute(f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?", (*fields.values(), now, job_id))


async def postpone(conn: Connection, job_ids: Sequence[int], states: Collection[JobState], until: float) -> None:
    """Look at these jobs no sooner than `until` (if still in `states`); updated_at is left alone:
    nothing about the job changed."""
    in_states, params = _one_of(states)
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        ids = ",".join("?" for _ in chunk)
        await conn.execute(
            f"UPDATE jobs SET next_poll_at = CASE WHEN next_poll_at > ? THEN next_poll_at ELSE ? END"
            f" WHERE id IN ({ids}) AND {in_states}",
            (until, until, *chunk, *params),
        )


async def due(
    db: Database,
    now: float,
    states: Collection[JobState],
    limit: int = 500,
    *,
    exclude: Collection[int] = (),
    only: Collection[int] | None = None,
) -> list[Job]:
    """Jobs in `states` due by `now`, soonest first, but those in `exclude` (being polled already);
    with `only`, among those jobs alone."""
    in_states, params = _one_of(states)
    owned, me = _owned(db)
    not_in, skipped = _not_in(db, exclude)
    among, chosen = ("", ()) if only is None else _ids(db, only, among=True)
    rows = await db.fetchall(
        f"SELECT * FROM jobs WHERE {in_states}{owned}{not_in}{among}"
        " AND (next_poll_at IS NULL OR next_poll_at <= ?) ORDER BY next_poll_at LIMIT ?",
        (*params, *me, *skipped, *chosen, now, limit),
    )
    return [job_of(r) for r in rows]


async def due_next(
    db: Database,
    provider: str,
    states: Collection[JobState],
    after: float,
    until: float,
    limit: int,
    *,
    exclude: Collection[int] = (),
) -> list[Job]:
    """`provider`'s jobs in `states` that fall due next (after `after`, up to `until`), soonest first,
    but those in `exclude`: what fills a batched status request that would otherwise go out partly empty."""
    in_states, params = _one_of(states)
    owned, me = _owned(db)
    not_in, skipped = _not_in(db, exclude)
    rows = await db.fetchall(
        f"SELECT * FROM jobs WHERE {in_states}{owned}{not_in} AND next_poll_at > ?"
        " AND next_poll_at <= ? AND provider = ? AND external_id IS NOT NULL ORDER BY next_poll_at LIMIT ?",
        (*params, *me, *skipped, after, until, provider, limit),
    )
    return [job_of(r) for r in rows]


async def count_by_provider(db: Database, states: Collection[JobState]) -> dict[str, int]:
    in_states, params = _one_of(states)
    rows = await db.fetchall(f"SELECT provider, COUNT(*) FROM jobs WHERE {in_states} GROUP BY provider", params)
    return {str(r[0]): int(r[1]) for r in rows}


@dataclass(frozen=True)
class Progress:
    """A still-running job's latest progress and when to look again."""

    job_id: int
    state: JobState  # as read: the update is compare-and-set on it
    new_state: JobState  # the same state when only the progress moved
    progress: int | None
    next_poll_at: float
    # the job's next_poll_at as read before the status request: when it moved meanwhile (a
    # callback brought the next look forward), the sooner of the two stands
    seen_next_poll_at: float | None = None


async def record_progress(conn: Connection, rows: Sequence[Progress], now: float) -> None:
    """One statement for a whole polling pass; a job whose state moved meanwhile is left alone."""
    for row in rows:
        if row.new_state != row.state:
            check_moves((row.state,), row.new_state)
    await conn.executemany(
        "UPDATE jobs SET state = ?, progress = ?, poll_failures = 0,"
        # the sooner of the two when next_poll_at moved since it was read (MIN(NULL, x) is NULL)
        " next_poll_at = CASE WHEN CAST(? AS DOUBLE PRECISION) IS NOT NULL"
        " AND next_poll_at IS DISTINCT FROM CAST(? AS DOUBLE PRECISION)"
        " AND (next_poll_at IS NULL OR next_poll_at < ?) THEN next_poll_at ELSE ? END,"
        " updated_at = ?, version = version + CASE WHEN state <> ? THEN 1 ELSE 0 END WHERE id = ? AND state = ?",
        [
            (
                r.new_state,
                r.progress,
                r.seen_next_poll_at,
                r.seen_next_poll_at,
                r.next_poll_at,
                r.next_poll_at,
                now,
                r.new_state,
                r.job_id,
                r.state,
            )
            for r in rows
        ],
    )


async def next_due_at(
    db: Database, states: Collection[JobState], *, unnotified_only: bool = False, exclude: Collection[int] = ()
) -> float | None:
    in_states, params = _one_of(states)
    owned, me = _owned(db)
    not_in, skipped = _not_in(db, exclude)
    sql = f"SELECT MIN(COALESCE(next_poll_at, 0)) FROM jobs WHERE {in_states}{owned}{not_in}"
    if unnotified_only:
        sql += " AND notified_at IS NULL"
    row = await db.fetchone(sql, (*params, *me, *skipped))
    return None if row is None or row[0] is None else float(row[0])


_ADMISSIONS = 0x0CA5  # pg_advisory_xact_lock's first key: admissions, per guild (the second key)


async def admissions_take_turns(conn: Connection, guild_id: int) -> None:
    """PostgreSQL: admissions to one guild wait for each other until commit, whichever process makes
    them, so the active jobs counted next include every job admitted before. SQLite has one writer."""
    if dialect(conn) == "sqlite":
        return
    await conn.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (_ADMISSIONS, str(guild_id)))


async def count_active(conn: Connection, guild_id: int, user_id: int | None = None) -> int:
    in_states, states = _one_of(ACTIVE)
    sql = f"SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND {in_states}"
    params: list[Any] = [guild_id, *states]
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(user_id)
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


# --- attempts (the outbox) ----------------------------------------------------------------------


async def start_attempt(conn: Connection, job_id: int, provider: str, now: float) -> str:
    """Record that we are about to send; returns the attempt's client reference."""
    async with conn.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM attempts WHERE job_id = ?", (job_id,)) as cur:
        row = await cur.fetchone()
    assert row is not None
    n = int(row[0])
    client_ref = f"castbot-{job_id}-{n}"
    await conn.execute(
        "INSERT INTO attempts (job_id, n, provider, client_ref, state, started_at) VALUES (?, ?, ?, ?, 'sending', ?)",
        (job_id, n, provider, client_ref, now),
    )
    return client_ref


async def finish_attempt(
    conn: Connection,
    client_ref: str,
    state: str,
    now: float,
    *,
    external_id: str | None = None,
    error_class: str | None = None,
    error: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE attempts SET state = ?, external_id = ?, error_class = ?, error = ?, finished_at = ?"
        " WHERE client_ref = ? AND state IN ('sending', 'ambiguous')",
        (state, external_id, error_class, error, now, client_ref),
    )


async def attempts_for(db: Database, job_id: int) -> list[Row]:
    return await db.fetchall("SELECT * FROM attempts WHERE job_id = ? ORDER BY n", (job_id,))


async def unnotified(db: Database, states: Collection[JobState], now: float, limit: int) -> list[Job]:
    """Finished jobs whose final message is still owed, due now."""
    in_states, params = _one_of(states)
    owned, me = _owned(db)
    rows = await db.fetchall(
        f"SELECT * FROM jobs WHERE notified_at IS NULL AND {in_states}{owned}"
        " AND (next_poll_at IS NULL OR next_poll_at <= ?) ORDER BY updated_at LIMIT ?",
        (*params, *me, now, limit),
    )
    return [job_of(r) for r in rows]


@dataclass(frozen=True)
class StatusChange:
    """A job whose status message may need an edit: what it shows now, and when that was stamped."""

    job_id: int
    channel_id: int
    state: JobState
    progress: int | None
    seq: int


async def status_changes(db: Database, after: int, limit: int) -> list[StatusChange]:
    """Jobs with a status message whose state or progress step changed since `status_seq` `after`,
    in the order the changes were committed (migration 0006)."""
    # on PostgreSQL, the owner edits the message; a job nobody holds (yet) is anyone's to show
    owned, me = (
        ("", ()) if db.dialect == "sqlite" else (" AND (lease_owner = ? OR lease_owner IS NULL)", (db.lease_owner,))
    )
    rows = await db.fetchall(
        f"SELECT id AS job_id, channel_id, state, progress, status_seq AS seq FROM jobs WHERE status_seq > ?{owned}"
        " ORDER BY status_seq LIMIT ?",
        (after, *me, limit),
    )
    return [mapped(StatusChange, r, state=JobState(r["state"])) for r in rows]


async def last_status_seq(db: Database) -> int:
    row = await db.fetchone("SELECT COALESCE(MAX(status_seq), 0) FROM jobs")
    return 0 if row is None else int(row[0])


async def held_due_by_provider(db: Database, now: float, per_provider: int) -> list[tuple[int, str | None]]:
    """(id, provider) of held jobs due now, at most `per_provider` of each provider, oldest first.

    Narrow rows: the loop asks on every pass and dispatches only a few at a time, and a long
    queue for one provider must not hide another provider's jobs behind it."""
    owned, me = _owned(db)
    rows = await db.fetchall(
        "SELECT id, provider FROM (SELECT id, provider, next_poll_at,"
        " ROW_NUMBER() OVER (PARTITION BY provider ORDER BY next_poll_at, id) AS n FROM jobs"
        f" WHERE state = ?{owned} AND (next_poll_at IS NULL OR next_poll_at <= ?)) AS held"
        " WHERE n <= ? ORDER BY next_poll_at, id",
        (JobState.HELD, *me, now, per_provider),
    )
    return [(int(r[0]), r[1]) for r in rows]


async def mark_in_flight_ambiguous(conn: Connection, now: float, only: Sequence[int] | None = None) -> list[int]:
    """After a restart, or taking over a dead process's jobs (`only` those): a job caught
    mid-submission may have reached the provider. Never resend it."""
    source, target = JobState.SUBMITTING, JobState.AMBIGUOUS
    check_moves((source,), target)
    if only is not None and not only:
        return []
    among = "" if only is None else f" AND id IN ({','.join('?' for _ in only)})"
    chosen = () if only is None else tuple(only)
    async with conn.execute(f"SELECT id FROM jobs WHERE state = ?{among}", (source, *chosen)) as cursor:
        ids = [int(r[0]) for r in await cursor.fetchall()]
    # the attempt's own states ('sending', 'ambiguous') are not job states
    await conn.execute(
        "UPDATE attempts SET state = 'ambiguous', error = 'interrupted by a restart'"
        f" WHERE state = 'sending' AND job_id IN (SELECT id FROM jobs WHERE state = ?{among})",
        (source, *chosen),
    )
    await conn.execute(
        "UPDATE jobs SET state = ?, error = 'interrupted by a restart', next_poll_at = ?, updated_at = ?,"
        f" version = version + 1 WHERE state = ?{among}",
        (target, now, now, source, *chosen),
    )
    return ids


# --- leases: which process acts on a job -----------------------------------------------------------


def _owned(db: Database) -> tuple[str, tuple[str, ...]]:
    """` AND lease_owner = ?` on PostgreSQL, where several processes share the jobs; nothing on
    SQLite, where the one process owns them all."""
    if db.dialect == "sqlite":
        return "", ()
    return " AND lease_owner = ?", (db.lease_owner,)


@dataclass(frozen=True)
class Claimed:
    job_id: int
    state: JobState
    previous_owner: str | None  # another process's name: taken over after its lease expired


@dataclass(frozen=True)
class Shards:
    """The Discord shards a process runs, `ids` of `count`: its guilds are those Discord routes
    there, `(guild_id >> 22) % count`."""

    count: int
    ids: frozenset[int]


async def claim_jobs(
    conn: Connection, owner: str, now: float, lease: float, limit: int = 5000, shards: Shards | None = None
) -> list[Claimed]:
    """Take (or renew) the lease of every job the loop still has work on that nobody else holds:
    unowned, expired, or ours with under three quarters of the lease left (a pass comes at least
    every quarter lease, so a live process renews with half the lease to spare; most passes write
    nothing). Rows another process is writing right now are skipped (FOR UPDATE SKIP LOCKED), never
    waited for. With `shards`, an unowned job is taken only if its guild is on one of them (the
    processes share the work as Discord shares the guilds) or it has waited a whole lease for its
    own shard's process (which is down); an expired lease is anyone's. On SQLite one process owns
    every job: nothing is written."""
    if dialect(conn) == "sqlite":
        return []
    open_states, finished = ordered(OPEN), ordered(FINISHED)
    unowned = "lease_owner IS NULL"
    unowned_params: tuple[float, ...] = ()
    if shards is not None and shards.ids:
        ids = sorted(shards.ids)
        unowned = f"lease_owner IS NULL AND (created_at < ? OR (guild_id >> 22) % ? IN ({','.join('?' for _ in ids)}))"
        unowned_params = (now - lease, shards.count, *ids)
    rows = await (
        await conn.execute(
            "WITH picked AS (SELECT id, lease_owner AS was FROM jobs"
            f" WHERE (state IN ({','.join('?' for _ in open_states)})"
            f" OR (notified_at IS NULL AND state IN ({','.join('?' for _ in finished)})))"
            f" AND (({unowned}) OR lease_until < ? OR (lease_owner = ? AND lease_until < ?))"
            " ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED)"
            " UPDATE jobs SET lease_owner = ?, lease_until = ? FROM picked WHERE jobs.id = picked.id"
            " RETURNING jobs.id, jobs.state, picked.was",
            (*open_states, *finished, *unowned_params, now, owner, now + lease * 3 / 4, limit, owner, now + lease),
        )
    ).fetchall()
    return [Claimed(int(r[0]), JobState(r[1]), r[2]) for r in rows]


async def take_over(
    conn: Connection, owner: str, now: float, lease: float, *, restart: bool, shards: Shards | None = None
) -> list[int]:
    """Claim or renew this process's jobs, and apply the restart rule to the jobs it now owns that
    another process (dead: its lease expired) left mid-submission; returns those jobs' ids.

    SQLite (one process): at a restart every job left mid-submission is such a job; between
    restarts there is nothing to take over."""
    if dialect(conn) == "sqlite":
        return await mark_in_flight_ambiguous(conn, now) if restart else []
    claimed = await claim_jobs(conn, owner, now, lease, shards=shards)
    others = Counter(c.previous_owner for c in claimed if c.previous_owner not in (None, owner))
    for previous, count in others.items():
        log.warning("took over %d jobs from process %s, whose leases expired (it stopped or lost the database)",
                    count, previous)  # fmt: skip
    orphaned = [c.job_id for c in claimed if c.state == JobState.SUBMITTING and c.previous_owner != owner]
    return await mark_in_flight_ambiguous(conn, now, only=orphaned)


async def renew_leases(db: Database, now: float, lease: float, shards: Shards | None = None) -> list[int]:
    """A loop pass's `take_over`, in a transaction of its own; on SQLite nothing to do, and no
    transaction is opened."""
    if db.dialect == "sqlite":
        return []
    async with db.transaction() as conn:
        return await take_over(conn, db.lease_owner, now, lease, restart=False, shards=shards)


async def release_leases(db: Database) -> int:
    """At a clean stop: give this process's jobs back at once, for another process to take."""
    if db.dialect == "sqlite":
        return 0
    return await db.execute(
        "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (db.lease_owner,)
    )


async def count_by_state(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT state, COUNT(*) FROM jobs GROUP BY state")
    return {str(r[0]): int(r[1]) for r in rows}
