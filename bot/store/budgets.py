"""Budget counters and the money ledger. SQL only; callers own the transaction.

Every function here that writes takes the connection of an open `Database.transaction()` so that
a hold is recorded together with the job it belongs to, and a settlement together with the job's
state change: all or nothing. Read models for display take the `Database` (its reader sees only
committed data). Amounts are integer micro-USD.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.db import Connection, Database, IntegrityError, dialect
from bot.domain.job_state import JobState
from bot.store.rows import mapped

GLOBAL, GUILD, MEMBER = "global", "guild", "member"


@dataclass(frozen=True)
class Scope:
    """One counter row: a scope, its id and the period the money belongs to."""

    scope: str
    scope_id: str
    period_key: str
    limit_micros: int | None  # None: unlimited (the row still tracks spend)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.scope, self.scope_id, self.period_key)


def job_scopes(
    guild_id: int,
    user_id: int,
    global_period: str,
    guild_period: str,
    member_period: str,
    *,
    global_limit: int | None = None,
    guild_limit: int | None = None,
    member_limit: int | None = None,
) -> tuple[Scope, Scope, Scope]:
    return (
        Scope(GLOBAL, "", global_period, global_limit),
        Scope(GUILD, str(guild_id), guild_period, guild_limit),
        Scope(MEMBER, f"{guild_id}:{user_id}", member_period, member_limit),
    )


class InsufficientBudget(Exception):
    """The hold does not fit; `scope` is the first scope that is short, `remaining` what is left there."""

    def __init__(self, scope: Scope, remaining: int) -> None:
        super().__init__(f"{scope.scope} budget too low: {remaining} micro-USD left")
        self.scope = scope
        self.remaining = remaining


class AlreadySettled(Exception):
    """A second capture/release of the same job: refused by the ledger's UNIQUE(job_id, kind)."""


async def _ensure_rows(conn: Connection, scopes: tuple[Scope, ...]) -> None:
    await conn.executemany(
        "INSERT INTO budget_counters (scope, scope_id, period_key, limit_micros) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (scope, scope_id, period_key) DO NOTHING",
        [(*s.key, s.limit_micros) for s in _in_lock_order(scopes)],
    )


def _in_lock_order(scopes: tuple[Scope, ...]) -> tuple[Scope, ...]:
    return tuple(sorted(scopes, key=lambda s: s.key))


async def _lock_rows(conn: Connection, scopes: tuple[Scope, ...]) -> None:
    """On PostgreSQL, lock the counter rows in one fixed order (their key) before changing them, so
    two transactions holding or settling in overlapping scopes wait for each other instead of
    deadlocking. SQLite has one writer at a time: nothing to do."""
    if dialect(conn) == "sqlite" or not scopes:
        return
    placeholders = ", ".join("(?, ?, ?)" for _ in scopes)
    params: list[object] = []
    for s in scopes:
        params.extend(s.key)
    await conn.execute(
        "SELECT 1 FROM budget_counters"
        f" WHERE (scope, scope_id, period_key) IN (VALUES {placeholders})"
        " ORDER BY scope, scope_id, period_key FOR UPDATE",
        params,
    )


async def hold(conn: Connection, job_id: int, scopes: tuple[Scope, ...], amount: int, now: float) -> None:
    """Hold `amount` in every scope or in none: one conditional UPDATE, then the ledger row.

    On PostgreSQL (READ COMMITTED) the UPDATE's condition is checked again on each row's latest
    committed version once its lock is ours, so concurrent holds from any number of processes
    cannot overspend a scope; a scope that does not fit leaves the row count short and the
    caller's transaction is rolled back."""
    if amount < 0:
        raise ValueError("a hold cannot be negative")
    await _ensure_rows(conn, scopes)
    await _lock_rows(conn, scopes)
    placeholders = ", ".join("(?, ?, ?)" for _ in scopes)
    params: list[object] = [amount]
    for s in scopes:
        params.extend(s.key)
    params.append(amount)
    cursor = await conn.execute(
        "UPDATE budget_counters SET held_micros = held_micros + ?"
        f" WHERE (scope, scope_id, period_key) IN (VALUES {placeholders})"
        " AND (limit_micros IS NULL OR spent_micros + held_micros + ? <= limit_micros)",
        params,
    )
    if cursor.rowcount != len(scopes):
        # Some scope is short: find which, so the member hears the precise reason. The caller's
        # transaction is rolled back by the exception, undoing the rows that did match.
        for s in scopes:
            remaining = await remaining_in(conn, s)
            if remaining is not None and remaining < amount:
                raise InsufficientBudget(s, remaining)
        raise InsufficientBudget(scopes[0], 0)
    await conn.execute(
        "INSERT INTO ledger (job_id, kind, amount_micros, created_at) VALUES (?, 'hold', ?, ?)",
        (job_id, amount, now),
    )


async def remaining_in(conn: Connection, scope: Scope) -> int | None:
    async with conn.execute(
        "SELECT limit_micros - spent_micros - held_micros FROM budget_counters"
        " WHERE scope = ? AND scope_id = ? AND period_key = ? AND limit_micros IS NOT NULL",
        scope.key,
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else max(0, int(row[0]))


async def settle(
    conn: Connection,
    job_id: int,
    scopes: tuple[Scope, ...],
    held: int,
    captured: int,
    now: float,
    reason: str = "",
) -> None:
    """Capture `captured` (≤ held) and release the rest, in every scope. Raises AlreadySettled on a
    second settlement of the same job; the caller's transaction then rolls back."""
    if not 0 <= captured <= held:
        raise ValueError("a capture must be between 0 and the amount held")
    await _lock_rows(conn, scopes)
    try:
        if captured:
            await conn.execute(
                "INSERT INTO ledger (job_id, kind, amount_micros, reason, created_at) VALUES (?, 'capture', ?, ?, ?)",
                (job_id, captured, reason, now),
            )
        await conn.execute(
            "INSERT INTO ledger (job_id, kind, amount_micros, reason, created_at) VALUES (?, 'release', ?, ?, ?)",
            (job_id, held - captured, reason, now),
        )
    except IntegrityError as exc:
        raise AlreadySettled(f"job {job_id} was already settled") from exc
    placeholders = ", ".join("(?, ?, ?)" for _ in scopes)
    params: list[object] = [held, captured]
    for s in scopes:
        params.extend(s.key)
    cursor = await conn.execute(
        "UPDATE budget_counters SET held_micros = held_micros - ?, spent_micros = spent_micros + ?"
        f" WHERE (scope, scope_id, period_key) IN (VALUES {placeholders})",
        params,
    )
    if cursor.rowcount != len(scopes):
        raise RuntimeError(f"job {job_id}: budget counters missing for settlement")


@dataclass(frozen=True)
class Counter:
    limit_micros: int | None
    held_micros: int
    spent_micros: int

    @property
    def remaining(self) -> int | None:
        if self.limit_micros is None:
            return None
        return max(0, self.limit_micros - self.held_micros - self.spent_micros)


async def read_counter(conn: Connection, scope: Scope) -> Counter | None:
    async with conn.execute(
        "SELECT limit_micros, held_micros, spent_micros FROM budget_counters"
        " WHERE scope = ? AND scope_id = ? AND period_key = ?",
        scope.key,
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else mapped(Counter, row)


@dataclass(frozen=True)
class Drift:
    scope: str
    scope_id: str
    period_key: str
    counter_held: int
    ledger_held: int
    counter_spent: int
    ledger_spent: int


async def audit(conn: Connection) -> list[Drift]:
    """Counters that disagree with the ledger (held = holds - captures - releases; spent = captures)."""
    sql = """
    WITH per_job AS (
        SELECT j.id, j.guild_id, j.user_id, j.global_period, j.guild_period, j.member_period,
               CAST(COALESCE(SUM(CASE WHEN l.kind = 'hold' THEN l.amount_micros END), 0)
             - COALESCE(SUM(CASE WHEN l.kind IN ('capture', 'release') THEN l.amount_micros END), 0) AS BIGINT) AS held,
               CAST(COALESCE(SUM(CASE WHEN l.kind = 'capture' THEN l.amount_micros END), 0) AS BIGINT) AS spent
        FROM jobs j JOIN ledger l ON l.job_id = j.id GROUP BY j.id
    ), expected AS (
        SELECT 'global' AS scope, '' AS scope_id, global_period AS period_key, held, spent FROM per_job
        UNION ALL SELECT 'guild', CAST(guild_id AS TEXT), guild_period, held, spent FROM per_job
        UNION ALL SELECT 'member', CAST(guild_id AS TEXT) || ':' || CAST(user_id AS TEXT), member_period, held, spent
        FROM per_job
    ), sums AS (
        SELECT scope, scope_id, period_key, CAST(SUM(held) AS BIGINT) AS held, CAST(SUM(spent) AS BIGINT) AS spent
        FROM expected GROUP BY scope, scope_id, period_key
    )
    SELECT c.scope, c.scope_id, c.period_key, c.held_micros, COALESCE(s.held, 0),
           c.spent_micros, COALESCE(s.spent, 0)
    FROM budget_counters c
    LEFT JOIN sums s ON s.scope = c.scope AND s.scope_id = c.scope_id AND s.period_key = c.period_key
    WHERE c.held_micros != COALESCE(s.held, 0) OR c.spent_micros != COALESCE(s.spent, 0)
    """
    async with conn.execute(sql) as cursor:
        rows = await cursor.fetchall()
    return [Drift(*(r[i] for i in range(7))) for r in rows]


# --- for the budget service: limits, free holds, overruns, read models -----------------------------


async def guild_limits(conn: Connection, guild_id: int) -> tuple[int | None, int | None]:
    """(monthly, member daily) limits as committed now, read inside the caller's transaction."""
    async with conn.execute(
        "SELECT monthly_limit_micros, member_daily_limit_micros FROM guild_settings WHERE guild_id = ?",
        (guild_id,),
    ) as cursor:
        row = await cursor.fetchone()
    return (None, None) if row is None else (row[0], row[1])


async def sync_limits(conn: Connection, scopes: tuple[Scope, ...]) -> None:
    """Create the rows of these periods, or bring their limits to the current settings."""
    await conn.executemany(
        "INSERT INTO budget_counters (scope, scope_id, period_key, limit_micros) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (scope, scope_id, period_key) DO UPDATE SET limit_micros = excluded.limit_micros"
        " WHERE budget_counters.limit_micros IS DISTINCT FROM excluded.limit_micros",
        [(*s.key, s.limit_micros) for s in scopes],
    )


async def hold_free(conn: Connection, job_id: int, scopes: tuple[Scope, ...], now: float) -> None:
    """A zero hold for a free job: the rows exist so its (zero) spend is tracked, and no cap,
    even one lowered below what is already spent, refuses a job that costs nothing."""
    await _ensure_rows(conn, scopes)
    await conn.execute(
        "INSERT INTO ledger (job_id, kind, amount_micros, created_at) VALUES (?, 'hold', 0, ?)",
        (job_id, now),
    )


async def record_overrun(
    conn: Connection, job_id: int, scopes: tuple[Scope, ...], amount: int, now: float, reason: str = ""
) -> None:
    """The provider billed more than was held: kept apart from `spent` so no cap check changes
    retroactively, but on the ledger and on every counter so the operator sees it."""
    try:
        await conn.execute(
            "INSERT INTO ledger (job_id, kind, amount_micros, reason, created_at) VALUES (?, 'overrun', ?, ?, ?)",
            (job_id, amount, reason, now),
        )
    except IntegrityError as exc:
        raise AlreadySettled(f"job {job_id} already has an overrun") from exc
    placeholders = ", ".join("(?, ?, ?)" for _ in scopes)
    params: list[object] = [amount]
    for s in scopes:
        params.extend(s.key)
    await conn.execute(
        "UPDATE budget_counters SET overrun_micros = overrun_micros + ?"
        f" WHERE (scope, scope_id, period_key) IN (VALUES {placeholders})",
        params,
    )


@dataclass(frozen=True)
class JobMoney:
    """What settlement needs from a job: who, which periods, and what the ledger holds for it."""

    job_id: int
    guild_id: int
    user_id: int
    global_period: str
    guild_period: str
    member_period: str
    estimate_micros: int
    held_micros: int | None  # the ledger's hold row; None: never held


async def job_money(conn: Connection, job_id: int) -> JobMoney | None:
    async with conn.execute(
        "SELECT j.id, j.guild_id, j.user_id, j.global_period, j.guild_period, j.member_period, j.estimate_micros,"
        " (SELECT amount_micros FROM ledger WHERE job_id = j.id AND kind = 'hold')"
        " FROM jobs j WHERE j.id = ?",
        (job_id,),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else JobMoney(*(row[i] for i in range(8)))


def _member_range(guild_id: int) -> tuple[str, str]:
    """Bounds of the member scope ids `guild:user` of one guild (';' sorts right after ':'), so the
    primary key index serves the lookup, which LIKE would not."""
    return f"{guild_id}:", f"{guild_id};"


async def set_current_limits(
    conn: Connection,
    guild_id: int,
    guild_month: str,
    member_day: str,
    *,
    monthly: int | None,
    member_daily: int | None,
) -> None:
    """Apply new limits to the rows of the current period that already exist (others copy the
    limit when created). Spent and held are untouched: a limit below them blocks new holds only."""
    await conn.execute(
        "UPDATE budget_counters SET limit_micros = ? WHERE scope = 'guild' AND scope_id = ? AND period_key = ?",
        (monthly, str(guild_id), guild_month),
    )
    await conn.execute(
        "UPDATE budget_counters SET limit_micros = ?"
        " WHERE scope = 'member' AND scope_id > ? AND scope_id < ? AND period_key = ?",
        (member_daily, *_member_range(guild_id), member_day),
    )


async def read_counters(db: Database, scopes: tuple[Scope, ...]) -> dict[tuple[str, str, str], Counter]:
    """Committed counters of these scopes (from the reader connection); absent rows are missing."""
    if not scopes:
        return {}
    placeholders = ", ".join("(?, ?, ?)" for _ in scopes)
    params: list[object] = []
    for s in scopes:
        params.extend(s.key)
    rows = await db.fetchall(
        "SELECT scope, scope_id, period_key, limit_micros, held_micros, spent_micros FROM budget_counters"
        f" WHERE (scope, scope_id, period_key) IN (VALUES {placeholders})",
        params,
    )
    return {(r["scope"], r["scope_id"], r["period_key"]): mapped(Counter, r) for r in rows}


@dataclass(frozen=True)
class SpenderRow:
    user_id: int
    spent_micros: int
    held_micros: int


async def top_spenders(db: Database, guild_id: int, month: str, limit: int = 5) -> list[SpenderRow]:
    """Members of a guild by money spent (then held) over the day rows of `month` (guild time)."""
    rows = await db.fetchall(
        "SELECT scope_id, CAST(SUM(spent_micros) AS BIGINT) AS spent_micros,"
        " CAST(SUM(held_micros) AS BIGINT) AS held_micros FROM budget_counters"
        " WHERE scope = 'member' AND scope_id > ? AND scope_id < ? AND period_key LIKE ?"
        " GROUP BY scope_id HAVING SUM(spent_micros) + SUM(held_micros) > 0"
        " ORDER BY spent_micros DESC, held_micros DESC, scope_id LIMIT ?",
        (*_member_range(guild_id), f"{month}-%", limit),
    )
    return [mapped(SpenderRow, r, user_id=int(r["scope_id"].split(":", 1)[1])) for r in rows]


@dataclass(frozen=True)
class JobLine:
    """One job as /jobs shows it, with its money as the ledger records it."""

    id: int
    user_id: int
    state: JobState
    prompt: str
    provider: str | None
    estimate_micros: int
    captured_micros: int | None  # None: not settled yet
    error_code: str | None
    created_at: float
    updated_at: float


async def recent_jobs(db: Database, guild_id: int, user_id: int, limit: int = 10) -> list[JobLine]:
    rows = await db.fetchall(
        "SELECT j.id, j.user_id, j.state, j.prompt, j.provider, j.estimate_micros,"
        " CASE WHEN EXISTS (SELECT 1 FROM ledger WHERE job_id = j.id AND kind = 'release')"
        "      THEN COALESCE((SELECT amount_micros FROM ledger WHERE job_id = j.id AND kind = 'capture'), 0)"
        "           + COALESCE((SELECT amount_micros FROM ledger WHERE job_id = j.id AND kind = 'overrun'), 0)"
        " END AS captured_micros,"
        " j.error_code, j.created_at, j.updated_at"
        " FROM jobs j WHERE j.guild_id = ? AND j.user_id = ? ORDER BY j.created_at DESC, j.id DESC LIMIT ?",
        (guild_id, user_id, limit),
    )
    return [mapped(JobLine, r, state=JobState(r["state"])) for r in rows]
