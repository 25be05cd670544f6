"""Holds, settlements and the audit on a real SQLite file, including under concurrency."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from bot.db import Database, SqliteDatabase
from bot.store import budgets
from bot.store.budgets import AlreadySettled, InsufficientBudget, Scope, job_scopes

NOW = 1_790_000_000.0


async def insert_job(conn, job_id: int, guild_id: int, user_id: int, estimate: int) -> None:
    await conn.execute(
        "INSERT INTO jobs (id, guild_id, channel_id, user_id, prompt, request_json, providers, state,"
        " estimate_micros, global_period, guild_period, member_period, created_at, updated_at)"
        " VALUES (?, ?, 1, ?, 'p', '{}', 'openai', 'held', ?, '2026-11', '2026-11', '2026-11-22', ?, ?)",
        (job_id, guild_id, user_id, estimate, NOW, NOW),
    )


def scopes_for(guild_id: int, user_id: int, guild_limit: int | None, member_limit: int | None = None):
    return job_scopes(
        guild_id,
        user_id,
        "2026-11",
        "2026-11",
        "2026-11-22",
        guild_limit=guild_limit,
        member_limit=member_limit,
    )


async def counter(db: Database, scope: Scope) -> budgets.Counter:
    async with db.transaction() as conn:
        found = await budgets.read_counter(conn, scope)
    assert found is not None
    return found


async def test_hold_is_all_scopes_or_none(db: Database) -> None:
    scopes = scopes_for(1, 10, guild_limit=1_000_000, member_limit=300)
    async with db.transaction() as conn:
        await insert_job(conn, 1, 1, 10, 200)
        await budgets.hold(conn, 1, scopes, 200, NOW)
    with pytest.raises(InsufficientBudget) as short:
        async with db.transaction() as conn:
            await insert_job(conn, 2, 1, 10, 200)
            await budgets.hold(conn, 2, scopes, 200, NOW)
    assert short.value.scope.scope == "member"
    assert short.value.remaining == 100
    # the failed admission left nothing behind: no job, no ledger row, guild counter untouched
    assert await db.fetchone("SELECT 1 FROM jobs WHERE id = 2") is None
    assert (await counter(db, scopes[1])).held_micros == 200
    assert (await counter(db, scopes[2])).held_micros == 200


async def test_settle_captures_actual_and_releases_the_rest_once(db: Database) -> None:
    scopes = scopes_for(1, 10, guild_limit=1_000)
    async with db.transaction() as conn:
        await insert_job(conn, 1, 1, 10, 800)
        await budgets.hold(conn, 1, scopes, 800, NOW)
    async with db.transaction() as conn:
        await budgets.settle(conn, 1, scopes, held=800, captured=300, now=NOW + 5)
    guild = await counter(db, scopes[1])
    assert (guild.held_micros, guild.spent_micros, guild.remaining) == (0, 300, 700)
    with pytest.raises(AlreadySettled):
        async with db.transaction() as conn:
            await budgets.settle(conn, 1, scopes, held=800, captured=0, now=NOW + 6)
    assert (await counter(db, scopes[1])).spent_micros == 300
    kinds = [r["kind"] for r in await db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
    assert kinds == ["hold", "capture", "release"]
    async with db.transaction() as conn:
        assert await budgets.audit(conn) == []


async def test_capture_above_hold_is_refused(db: Database) -> None:
    scopes = scopes_for(1, 10, guild_limit=None)
    async with db.transaction() as conn:
        await insert_job(conn, 1, 1, 10, 100)
        await budgets.hold(conn, 1, scopes, 100, NOW)
    with pytest.raises(ValueError, match="between 0 and"):
        async with db.transaction() as conn:
            await budgets.settle(conn, 1, scopes, held=100, captured=101, now=NOW)


async def test_audit_reports_a_counter_that_drifted(db: Database) -> None:
    scopes = scopes_for(3, 30, guild_limit=10_000)
    async with db.transaction() as conn:
        await insert_job(conn, 1, 3, 30, 500)
        await budgets.hold(conn, 1, scopes, 500, NOW)
    await db.execute("UPDATE budget_counters SET held_micros = 499 WHERE scope = 'guild'")
    async with db.transaction() as conn:
        drift = await budgets.audit(conn)
    assert [(d.scope, d.counter_held, d.ledger_held) for d in drift] == [("guild", 499, 500)]


async def run_random_admissions(dbs: list[Database], seed: int, attempts: int) -> dict[str, int]:
    """Concurrent admissions across 20 guilds and 100 members with random caps, then random settlements."""
    rng = random.Random(seed)
    guild_caps = {g: rng.randrange(1_000, 50_000) for g in range(20)}
    member_caps = {m: rng.choice([None, rng.randrange(500, 10_000)]) for m in range(100)}
    global_cap = sum(guild_caps.values()) // 2
    admitted: list[tuple[int, tuple[Scope, ...], int]] = []
    refused = 0

    async def admit(job_id: int) -> None:
        nonlocal refused
        guild, member = rng.randrange(20), rng.randrange(100)
        amount = rng.randrange(1, 3_000)
        scopes = (
            Scope("global", "", "2026-11", global_cap),
            Scope("guild", str(guild), "2026-11", guild_caps[guild]),
            Scope("member", f"{guild}:{member}", "2026-11-22", member_caps[member]),
        )
        db = dbs[job_id % len(dbs)]
        try:
            async with db.transaction() as conn:
                await insert_job(conn, job_id, guild, member, amount)
                await budgets.hold(conn, job_id, scopes, amount, NOW)
        except InsufficientBudget:
            refused += 1
            return
        admitted.append((job_id, scopes, amount))

    await asyncio.gather(*(admit(i) for i in range(1, attempts + 1)))

    async def settle(job_id: int, scopes: tuple[Scope, ...], amount: int) -> None:
        captured = rng.choice([0, amount, rng.randrange(0, amount + 1)])
        db = dbs[job_id % len(dbs)]
        async with db.transaction() as conn:
            await budgets.settle(conn, job_id, scopes, held=amount, captured=captured, now=NOW)

    to_settle = [a for a in admitted if rng.random() < 0.7]
    await asyncio.gather(*(settle(*a) for a in to_settle))
    return {"admitted": len(admitted), "refused": refused, "settled": len(to_settle)}


async def assert_no_cap_exceeded_and_ledger_balances(db: Database) -> None:
    over = await db.fetchall(
        "SELECT * FROM budget_counters WHERE limit_micros IS NOT NULL AND held_micros + spent_micros > limit_micros"
    )
    assert over == []
    async with db.transaction() as conn:
        assert await budgets.audit(conn) == []
    totals = await db.fetchone(
        "SELECT SUM(CASE WHEN kind='hold' THEN amount_micros ELSE 0 END),"
        " SUM(CASE WHEN kind IN ('capture','release') THEN amount_micros ELSE 0 END) FROM ledger"
    )
    held_now = await db.fetchone("SELECT SUM(held_micros) FROM budget_counters WHERE scope = 'global'")
    assert totals is not None
    assert held_now is not None
    assert totals[0] - totals[1] == held_now[0]


async def test_a_thousand_concurrent_admissions_never_exceed_any_cap(db: Database) -> None:
    stats = await run_random_admissions([db], seed=7, attempts=1000)
    assert stats["admitted"] > 100  # the caps bit: both outcomes happened
    assert stats["refused"] > 100
    await assert_no_cap_exceeded_and_ledger_balances(db)


async def test_separate_connections_cannot_overspend_either(tmp_path: Path, sqlite_db: SqliteDatabase) -> None:
    db = sqlite_db
    # Four independent writer connections on one file: the conditional UPDATE inside BEGIN IMMEDIATE,
    # not our in-process lock, is what keeps the caps.
    others = [await Database.open(db.path) for _ in range(3)]
    try:
        stats = await run_random_admissions([db, *others], seed=11, attempts=400)
        assert stats["refused"] > 0
        await assert_no_cap_exceeded_and_ledger_balances(db)
    finally:
        for other in others:
            await other.close()
