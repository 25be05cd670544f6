"""Budget counters and the money ledger. SQL only; callers own the transaction.

Every function here takes the connection of an open `Database.transaction()` so that a hold is
recorded together with the job it belongs to, and a settlement together with the job's state
change: all or nothing. Amounts are integer micro-USD.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

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


async def _ensure_rows(conn: aiosqlite.Connection, scopes: tuple[Scope, ...]) -> None:
    await conn.executemany(
        "INSERT OR IGNORE INTO budget_counters (scope, scope_id, period_key, limit_micros) VALUES (?, ?, ?, ?)",
        [(*s.key, s.limit_micros) for s in scopes],
    )


async def hold(conn: aiosqlite.Connection, job_id: int, scopes: tuple[Scope, ...], amount: int, now: float) -> None:
    """Hold `amount` in every scope or in none: one conditional UPDATE, then the ledger row."""
    if amount < 0:
        raise ValueError("a hold cannot be negative")
    await _ensure_rows(conn, scopes)
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


async def remaining_in(conn: aiosqlite.Connection, scope: Scope) -> int | None:
    async with conn.execute(
        "SELECT limit_micros - spent_micros - held_micros FROM budget_counters"
        " WHERE scope = ? AND scope_id = ? AND period_key = ? AND limit_micros IS NOT NULL",
        scope.key,
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else max(0, int(row[0]))


async def settle(
    conn: aiosqlite.Connection,
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
    except aiosqlite.IntegrityError as exc:
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


async def read_counter(conn: aiosqlite.Connection, scope: Scope) -> Counter | None:
    async with conn.execute(
        "SELECT limit_micros, held_micros, spent_micros FROM budget_counters"
        " WHERE scope = ? AND scope_id = ? AND period_key = ?",
        scope.key,
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else Counter(row[0], int(row[1]), int(row[2]))


@dataclass(frozen=True)
class Drift:
    scope: str
    scope_id: str
    period_key: str
    counter_held: int
    ledger_held: int
    counter_spent: int
    ledger_spent: int


async def audit(conn: aiosqlite.Connection) -> list[Drift]:
    """Counters that disagree with the ledger (held = holds - captures - releases; spent = captures)."""
    sql = """
    WITH per_job AS (
        SELECT j.id, j.guild_id, j.user_id, j.global_period, j.guild_period, j.member_period,
               COALESCE(SUM(CASE WHEN l.kind = 'hold' THEN l.amount_micros END), 0)
             - COALESCE(SUM(CASE WHEN l.kind IN ('capture', 'release') THEN l.amount_micros END), 0) AS held,
               COALESCE(SUM(CASE WHEN l.kind = 'capture' THEN l.amount_micros END), 0) AS spent
        FROM jobs j JOIN ledger l ON l.job_id = j.id GROUP BY j.id
    ), expected AS (
        SELECT 'global' AS scope, '' AS scope_id, global_period AS period_key, held, spent FROM per_job
        UNION ALL SELECT 'guild', CAST(guild_id AS TEXT), guild_period, held, spent FROM per_job
        UNION ALL SELECT 'member', guild_id || ':' || user_id, member_period, held, spent FROM per_job
    ), sums AS (
        SELECT scope, scope_id, period_key, SUM(held) AS held, SUM(spent) AS spent
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
