"""BudgetService on a real SQLite file: admission, settlement, limits, periods, the audit."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bot.config import Settings
from bot.db import Database
from bot.domain.money import BadAmount
from bot.errors import NotModerator
from bot.i18n import t
from bot.services.actors import Actor
from bot.services.budget import (
    BudgetExceeded,
    BudgetPlan,
    BudgetService,
    NoBudgetSet,
    NotHeld,
    TooManyActiveJobs,
)
from bot.services.guilds import GuildService
from bot.store import budgets
from bot.store import guilds as guild_store
from bot.store.budgets import AlreadySettled

USD = 1_000_000


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


NOW = ts(2026, 11, 22, 12)
GUILD, OTHER_GUILD = 100, 200
ADMIN = Actor(user_id=1, guild_id=GUILD, manage_guild=True)
MEMBER = Actor(user_id=2, guild_id=GUILD)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_service(db: Database, clock: Clock, global_usd: str | None = None) -> BudgetService:
    settings = Settings(_env_file=None, global_monthly_budget_usd=Decimal(global_usd) if global_usd else None)
    return BudgetService(db, settings, GuildService(db, clock), clock)


@pytest.fixture
def service(db: Database, clock: Clock) -> BudgetService:
    return make_service(db, clock)


async def configure(db: Database, guild_id: int, **changes: Any) -> None:
    async with db.transaction() as conn:
        await guild_store.upsert(conn, guild_id, changes, NOW)


async def insert_job(conn, plan: BudgetPlan, estimate: int, now: float, state: str = "held") -> int:
    """A jobs row the way admission writes it (generation owns the real insert)."""
    cursor = await conn.execute(
        "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, request_json, providers, state,"
        " estimate_micros, global_period, guild_period, member_period, created_at, updated_at)"
        " VALUES (?, 1, ?, 'a cat', '{}', 'openai', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            plan.guild_id,
            plan.user_id,
            state,
            estimate,
            plan.periods.global_month,
            plan.periods.guild_month,
            plan.periods.member_day,
            now,
            now,
        ),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def admit(
    service: BudgetService,
    db: Database,
    guild_id: int,
    user_id: int,
    amount: int,
    now: float = NOW,
    *,
    paid: bool = True,
    activity: bool = False,
) -> int:
    plan = await service.plan(guild_id, user_id, paid=paid, now=now)
    async with db.transaction() as conn:
        if activity:
            await service.check_activity(conn, guild_id, user_id, await GuildService(db).get(guild_id))
        job_id = await insert_job(conn, plan, amount, now)
        await service.hold(conn, job_id, plan, amount, now)
    return job_id


async def settle(service: BudgetService, db: Database, job_id: int, captured: int, now: float = NOW) -> None:
    async with db.transaction() as conn:
        await service.settle(conn, job_id, captured, now, reason="test")


async def maybe_counter(db: Database, scope: str, scope_id: str, period: str) -> budgets.Counter | None:
    found = await budgets.read_counters(db, (budgets.Scope(scope, scope_id, period, None),))
    return found.get((scope, scope_id, period))


async def counter(db: Database, scope: str, scope_id: str, period: str) -> budgets.Counter:
    found = await maybe_counter(db, scope, scope_id, period)
    assert found is not None, (scope, scope_id, period)
    return found


async def one(db: Database, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    row = await db.fetchone(sql, params)
    assert row is not None
    return tuple(row)


async def ledger_kinds(db: Database, job_id: int) -> list[tuple[str, int]]:
    rows = await db.fetchall("SELECT kind, amount_micros FROM ledger WHERE job_id = ? ORDER BY id", (job_id,))
    return [(r[0], r[1]) for r in rows]


async def assert_balanced(service: BudgetService, db: Database) -> None:
    assert await service.audit() == []
    over = await db.fetchall(
        "SELECT scope, scope_id, period_key FROM budget_counters"
        " WHERE limit_micros IS NOT NULL AND held_micros + spent_micros > limit_micros"
    )
    assert [tuple(r) for r in over] == []


# --- no budget, free jobs ----------------------------------------------------------------------


async def test_paid_job_without_a_budget_is_refused_with_how_to_set_one(service: BudgetService) -> None:
    with pytest.raises(NoBudgetSet) as refused:
        await service.plan(GUILD, 2, paid=True, now=NOW)
    message = t(refused.value.key, "en")
    assert "/budget set" in message
    assert "moderator" in message.lower()


async def test_free_local_job_needs_no_budget_and_is_tracked(service: BudgetService, db: Database) -> None:
    job = await admit(service, db, GUILD, 2, 0, paid=False)
    guild_row = await counter(db, "guild", str(GUILD), "2026-11")
    assert (guild_row.limit_micros, guild_row.held_micros, guild_row.spent_micros) == (None, 0, 0)
    assert await maybe_counter(db, "member", f"{GUILD}:2", "2026-11-22") is not None
    await settle(service, db, job, 0)
    assert await ledger_kinds(db, job) == [("hold", 0), ("release", 0)]
    await assert_balanced(service, db)


async def test_a_paid_hold_without_a_budget_cannot_open_an_unlimited_row(service: BudgetService, db: Database) -> None:
    # plan(paid=False) then a paid amount: hold() is the authority, not the plan
    with pytest.raises(NoBudgetSet):
        await admit(service, db, GUILD, 2, 300_000, paid=False)
    assert await maybe_counter(db, "guild", str(GUILD), "2026-11") is None
    assert await db.fetchone("SELECT 1 FROM jobs") is None


async def test_free_jobs_run_even_when_the_paid_budget_is_used_up(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=1 * USD)
    await admit(service, db, GUILD, 2, 1 * USD)
    await service.set_limits(ADMIN, "0.50")  # now over the limit
    with pytest.raises(BudgetExceeded):
        await admit(service, db, GUILD, 2, 10_000)
    await admit(service, db, GUILD, 2, 0, paid=False)
    assert await service.audit() == []


# --- holds in three scopes --------------------------------------------------------------------


async def test_guild_cap_refuses_with_the_remaining_money_named(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=1 * USD)
    await admit(service, db, GUILD, 2, 700_000)
    with pytest.raises(BudgetExceeded) as short:
        await admit(service, db, GUILD, 3, 400_000)
    assert (short.value.scope, short.value.remaining, short.value.needed) == ("guild", 300_000, 400_000)
    message = t(short.value.key, "en", **short.value.params)
    assert "$0.30 left" in message
    assert "$0.40" in message
    assert "server" in message
    # the refused admission left nothing: one job, one hold
    assert (await one(db, "SELECT COUNT(*) FROM jobs"))[0] == 1
    assert (await counter(db, "guild", str(GUILD), "2026-11")).held_micros == 700_000
    assert await maybe_counter(db, "member", f"{GUILD}:3", "2026-11-22") is None  # rolled back with the rest
    await assert_balanced(service, db)


async def test_member_daily_cap_is_per_member(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD, member_daily_limit_micros=1 * USD)
    await admit(service, db, GUILD, 2, 800_000)
    with pytest.raises(BudgetExceeded) as short:
        await admit(service, db, GUILD, 2, 300_000)
    assert short.value.scope == "member"
    assert "Your daily cap" in t(short.value.key, "en", **short.value.params)
    await admit(service, db, GUILD, 3, 900_000)  # someone else still can
    await assert_balanced(service, db)


async def test_operator_cap_spans_guilds(db: Database, clock: Clock) -> None:
    service = make_service(db, clock, global_usd="1.50")
    assert service.global_limit == 1_500_000
    for guild in (GUILD, OTHER_GUILD):
        await configure(db, guild, monthly_limit_micros=10 * USD)
    await admit(service, db, GUILD, 2, 1 * USD)
    with pytest.raises(BudgetExceeded) as short:
        await admit(service, db, OTHER_GUILD, 5, 600_000)
    assert (short.value.scope, short.value.remaining) == ("global", 500_000)
    await admit(service, db, OTHER_GUILD, 5, 500_000)
    await assert_balanced(service, db)


async def test_active_job_limits_per_member_and_per_guild(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD, max_active_per_member=2, max_active_per_guild=3)
    first = await admit(service, db, GUILD, 2, 100_000, activity=True)
    await admit(service, db, GUILD, 2, 100_000, activity=True)
    with pytest.raises(TooManyActiveJobs) as busy:
        await admit(service, db, GUILD, 2, 100_000, activity=True)
    assert busy.value.scope == "member"
    assert "2 videos in progress" in t(busy.value.key, "en", **busy.value.params)
    await admit(service, db, GUILD, 3, 100_000, activity=True)
    with pytest.raises(TooManyActiveJobs) as full:
        await admit(service, db, GUILD, 4, 100_000, activity=True)
    assert full.value.scope == "guild"
    # a finished job frees its slot
    async with db.transaction() as conn:
        await conn.execute("UPDATE jobs SET state = 'delivered' WHERE id = ?", (first,))
        await service.settle(conn, first, 50_000, NOW)
    await admit(service, db, GUILD, 2, 100_000, activity=True)
    # other guilds are not affected
    await configure(db, OTHER_GUILD, monthly_limit_micros=USD)
    await admit(service, db, OTHER_GUILD, 2, 100_000, activity=True)


# --- settlement ------------------------------------------------------------------------------


async def test_settle_captures_the_cost_and_releases_the_rest_once(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=5 * USD)
    job = await admit(service, db, GUILD, 2, 1 * USD)
    await settle(service, db, job, 350_000)
    guild = await counter(db, "guild", str(GUILD), "2026-11")
    assert (guild.held_micros, guild.spent_micros, guild.remaining) == (0, 350_000, 4_650_000)
    with pytest.raises(AlreadySettled):
        await settle(service, db, job, 350_000)
    with pytest.raises(AlreadySettled):
        async with db.transaction() as conn:
            await service.release(conn, job, NOW, "late failure")
    assert await ledger_kinds(db, job) == [("hold", 1 * USD), ("capture", 350_000), ("release", 650_000)]
    await assert_balanced(service, db)


async def test_release_gives_the_whole_hold_back(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=1 * USD)
    job = await admit(service, db, GUILD, 2, 1 * USD)
    async with db.transaction() as conn:
        await service.release(conn, job, NOW, "rejected by provider")
    guild = await counter(db, "guild", str(GUILD), "2026-11")
    assert (guild.held_micros, guild.spent_micros) == (0, 0)
    reason = await one(db, "SELECT reason FROM ledger WHERE job_id = ? AND kind = 'release'", (job,))
    assert reason[0] == "rejected by provider"
    await admit(service, db, GUILD, 2, 1 * USD)  # the money is usable again


async def test_a_cost_above_the_hold_is_an_overrun_not_extra_spend(
    service: BudgetService, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await configure(db, GUILD, monthly_limit_micros=1 * USD)
    job = await admit(service, db, GUILD, 2, 500_000)
    caplog.set_level(logging.WARNING, logger="bot.services.budget")
    await settle(service, db, job, 650_000)
    guild = await counter(db, "guild", str(GUILD), "2026-11")
    assert (guild.held_micros, guild.spent_micros) == (0, 500_000)
    overrun = await one(
        db, "SELECT overrun_micros FROM budget_counters WHERE scope = 'guild' AND scope_id = ?", (str(GUILD),)
    )
    assert overrun[0] == 150_000
    assert ("overrun", 150_000) in await ledger_kinds(db, job)
    assert any("overrun" in r.getMessage() for r in caplog.records)
    await assert_balanced(service, db)


async def test_settling_a_job_that_was_never_held_is_a_bug_not_a_silent_noop(
    service: BudgetService, db: Database
) -> None:
    plan = await service.plan(GUILD, 2, paid=False, now=NOW)
    async with db.transaction() as conn:
        job = await insert_job(conn, plan, 100, NOW)
    with pytest.raises(NotHeld):
        await settle(service, db, job, 0)
    with pytest.raises(NotHeld):
        await settle(service, db, 999_999, 0)


# --- limits set by moderators ------------------------------------------------------------------


async def test_a_member_cannot_set_the_budget_a_moderator_can(service: BudgetService, db: Database) -> None:
    with pytest.raises(NotModerator):
        await service.set_limits(MEMBER, "20")
    assert (await GuildService(db).get(GUILD)).monthly_limit_micros is None
    overview = await service.set_limits(ADMIN, "$20", "2,50")
    settings = await GuildService(db).get(GUILD)
    assert (settings.monthly_limit_micros, settings.member_daily_limit_micros) == (20 * USD, 2_500_000)
    assert overview.guild.limit_micros == 20 * USD
    assert overview.is_moderator


async def test_the_moderator_role_can_set_the_budget(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, moderator_role_id=77)
    mod = Actor(user_id=9, guild_id=GUILD, role_ids=frozenset({77}))
    await service.set_limits(mod, "12.50")
    assert (await GuildService(db).get(GUILD)).monthly_limit_micros == 12_500_000
    # the same role id in another guild grants nothing there
    with pytest.raises(NotModerator):
        await service.set_limits(Actor(user_id=9, guild_id=OTHER_GUILD, role_ids=frozenset({77})), "5")


async def test_bad_amounts_are_refused_before_anything_changes(service: BudgetService, db: Database) -> None:
    await service.set_limits(ADMIN, "10")
    for bad in ("-5", "NaN", "1e9", "5.555", "1000000"):
        with pytest.raises(BadAmount):
            await service.set_limits(ADMIN, bad)
        with pytest.raises(BadAmount):
            await service.set_limits(ADMIN, "10", bad)
    settings = await GuildService(db).get(GUILD)
    assert (settings.monthly_limit_micros, settings.member_daily_limit_micros) == (10 * USD, None)


async def test_daily_cap_is_kept_when_omitted_and_removed_with_none(service: BudgetService, db: Database) -> None:
    await service.set_limits(ADMIN, "10", "1")
    await service.set_limits(ADMIN, "15")
    assert (await GuildService(db).get(GUILD)).member_daily_limit_micros == 1 * USD
    await service.set_limits(ADMIN, "15", "None")
    assert (await GuildService(db).get(GUILD)).member_daily_limit_micros is None


async def test_set_updates_the_current_rows_only(service: BudgetService, db: Database, clock: Clock) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD, member_daily_limit_micros=1 * USD)
    await configure(db, OTHER_GUILD, monthly_limit_micros=10 * USD, member_daily_limit_micros=1 * USD)
    yesterday = NOW - 86_400
    await admit(service, db, GUILD, 2, 100_000, now=yesterday)
    await admit(service, db, GUILD, 2, 100_000)
    await admit(service, db, GUILD, 3, 100_000)
    await admit(service, db, OTHER_GUILD, 2, 100_000)
    await service.set_limits(ADMIN, "30", "4")
    assert (await counter(db, "guild", str(GUILD), "2026-11")).limit_micros == 30 * USD
    assert (await counter(db, "member", f"{GUILD}:2", "2026-11-22")).limit_micros == 4 * USD
    assert (await counter(db, "member", f"{GUILD}:3", "2026-11-22")).limit_micros == 4 * USD
    # yesterday's row and the other guild keep theirs
    assert (await counter(db, "member", f"{GUILD}:2", "2026-11-21")).limit_micros == 1 * USD
    assert (await counter(db, "guild", str(OTHER_GUILD), "2026-11")).limit_micros == 10 * USD
    assert (await counter(db, "member", f"{OTHER_GUILD}:2", "2026-11-22")).limit_micros == 1 * USD
    await service.set_limits(ADMIN, "30", "off")
    assert (await counter(db, "member", f"{GUILD}:2", "2026-11-22")).limit_micros is None


async def test_a_limit_below_spent_blocks_new_jobs_but_running_ones_settle(
    service: BudgetService, db: Database
) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD)
    done = await admit(service, db, GUILD, 2, 3 * USD)
    await settle(service, db, done, 3 * USD)
    running = await admit(service, db, GUILD, 3, 2 * USD)
    overview = await service.set_limits(ADMIN, "2")  # already spent 3
    assert overview.guild.over_limit
    assert overview.remaining == 0
    with pytest.raises(BudgetExceeded) as short:
        await admit(service, db, GUILD, 4, 10_000)
    assert short.value.remaining == 0
    await settle(service, db, running, 1_500_000)  # the running job is not canceled
    guild = await counter(db, "guild", str(GUILD), "2026-11")
    assert (guild.limit_micros, guild.held_micros, guild.spent_micros) == (2 * USD, 0, 4_500_000)
    assert await service.audit() == []


async def test_a_limit_changed_between_plan_and_hold_is_honoured(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD)
    plan = await service.plan(GUILD, 2, paid=True, now=NOW)
    assert plan.scopes[1].limit_micros == 10 * USD
    await service.set_limits(ADMIN, "1")  # commits before the admission transaction
    with pytest.raises(BudgetExceeded):
        async with db.transaction() as conn:
            job = await insert_job(conn, plan, 2 * USD, NOW)
            await service.hold(conn, job, plan, 2 * USD, NOW)
    async with db.transaction() as conn:  # what fits the new limit still goes through, on the old plan
        job = await insert_job(conn, plan, 1 * USD, NOW)
        await service.hold(conn, job, plan, 1 * USD, NOW)
    assert (await counter(db, "guild", str(GUILD), "2026-11")).limit_micros == 1 * USD
    # and a budget removed meanwhile (row value NULL) cannot let a paid hold through
    await configure(db, GUILD, monthly_limit_micros=None)
    with pytest.raises(NoBudgetSet):
        async with db.transaction() as conn:
            job = await insert_job(conn, plan, 100, NOW)
            await service.hold(conn, job, plan, 100, NOW)


async def test_a_new_operator_cap_applies_to_the_current_month(db: Database, clock: Clock) -> None:
    await configure(db, GUILD, monthly_limit_micros=100 * USD)
    await admit(make_service(db, clock, global_usd="50"), db, GUILD, 2, 10 * USD)
    lowered = make_service(db, clock, global_usd="12")  # the operator restarted with a lower cap
    with pytest.raises(BudgetExceeded) as short:
        await admit(lowered, db, GUILD, 2, 3 * USD)
    assert (short.value.scope, short.value.remaining) == ("global", 2 * USD)


# --- the read model -------------------------------------------------------------------------


async def test_overview_for_members_and_moderators(service: BudgetService, db: Database) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD, member_daily_limit_micros=2 * USD)
    a = await admit(service, db, GUILD, 2, 1 * USD)
    await settle(service, db, a, 600_000)
    await admit(service, db, GUILD, 2, 500_000)  # still held
    b = await admit(service, db, GUILD, 3, 1 * USD)
    await settle(service, db, b, 1 * USD)
    await admit(service, db, OTHER_GUILD, 9, 0, paid=False)

    mine = await service.overview(MEMBER)
    assert (mine.guild.period, mine.member.period) == ("2026-11", "2026-11-22")
    assert (mine.guild.limit_micros, mine.guild.spent_micros, mine.guild.held_micros) == (10 * USD, 1_600_000, 500_000)
    assert mine.guild.remaining == 7_900_000
    assert (mine.member.spent_micros, mine.member.held_micros, mine.member.remaining) == (600_000, 500_000, 900_000)
    assert mine.remaining == 900_000  # the tightest scope
    assert not mine.is_moderator
    assert mine.top_spenders == ()

    admin = await service.overview(ADMIN)
    assert admin.is_moderator
    assert [(s.user_id, s.spent_micros, s.held_micros) for s in admin.top_spenders] == [
        (3, 1 * USD, 0),
        (2, 600_000, 500_000),
    ]


async def test_overview_of_a_guild_without_a_budget(service: BudgetService) -> None:
    overview = await service.overview(MEMBER)
    assert not overview.budget_set
    assert overview.remaining == 0
    assert overview.guild.limit_micros is None


# --- periods ----------------------------------------------------------------------------------


async def test_held_before_midnight_captured_after_lands_in_the_held_day(
    service: BudgetService, db: Database, clock: Clock
) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD, member_daily_limit_micros=1 * USD)
    held_at, captured_at = ts(2026, 11, 22, 23, 59, 59), ts(2026, 11, 23, 0, 0, 5)
    job = await admit(service, db, GUILD, 2, 1 * USD, now=held_at)
    await settle(service, db, job, 800_000, now=captured_at)
    day = await counter(db, "member", f"{GUILD}:2", "2026-11-22")
    assert (day.held_micros, day.spent_micros) == (0, 800_000)
    assert await maybe_counter(db, "member", f"{GUILD}:2", "2026-11-23") is None
    # a new day, a new daily cap: the full dollar is available again
    clock.now = captured_at
    overview = await service.overview(MEMBER)
    assert (overview.member.period, overview.member.spent_micros, overview.member.remaining) == (
        "2026-11-23",
        0,
        1 * USD,
    )
    await admit(service, db, GUILD, 2, 1 * USD, now=captured_at)


async def test_month_roll_over(service: BudgetService, db: Database, clock: Clock) -> None:
    await configure(db, GUILD, monthly_limit_micros=1 * USD)
    held_at, captured_at = ts(2026, 11, 30, 23, 59, 59), ts(2026, 12, 1, 0, 0, 5)
    job = await admit(service, db, GUILD, 2, 1 * USD, now=held_at)
    with pytest.raises(BudgetExceeded):  # November is full
        await admit(service, db, GUILD, 3, 1, now=held_at)
    await settle(service, db, job, 1 * USD, now=captured_at)
    november = await counter(db, "guild", str(GUILD), "2026-11")
    assert (november.held_micros, november.spent_micros) == (0, 1 * USD)
    assert (await counter(db, "global", "", "2026-11")).spent_micros == 1 * USD
    clock.now = captured_at
    december = await service.overview(MEMBER)
    assert (december.guild.period, december.guild.spent_micros, december.guild.remaining) == ("2026-12", 0, 1 * USD)
    await admit(service, db, GUILD, 3, 1 * USD, now=captured_at)
    await assert_balanced(service, db)


async def test_non_utc_guild_timezone(service: BudgetService, db: Database, clock: Clock) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD, timezone="America/New_York")
    # 2026-12-01 03:00 UTC is 22:00 on 30 November in New York
    held_at = ts(2026, 12, 1, 3, 0, 0)
    job = await admit(service, db, GUILD, 2, 2 * USD, now=held_at)
    row = await one(db, "SELECT global_period, guild_period, member_period FROM jobs WHERE id = ?", (job,))
    assert tuple(row) == ("2026-12", "2026-11", "2026-11-30")
    # captured after midnight in New York: still November's money, the operator's December
    await settle(service, db, job, 1 * USD, now=ts(2026, 12, 1, 5, 30, 0))
    assert (await counter(db, "guild", str(GUILD), "2026-11")).spent_micros == 1 * USD
    assert (await counter(db, "member", f"{GUILD}:2", "2026-11-30")).spent_micros == 1 * USD
    assert (await counter(db, "global", "", "2026-12")).spent_micros == 1 * USD
    clock.now = held_at
    overview = await service.overview(MEMBER)
    assert (overview.guild.period, overview.member.period, overview.timezone) == (
        "2026-11",
        "2026-11-30",
        "America/New_York",
    )
    assert overview.guild.spent_micros == 1 * USD
    await assert_balanced(service, db)


# --- the audit --------------------------------------------------------------------------------


async def test_audit_and_report_logs_each_drift(
    service: BudgetService, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await configure(db, GUILD, monthly_limit_micros=10 * USD)
    await admit(service, db, GUILD, 2, 1 * USD)
    caplog.set_level(logging.INFO, logger="bot.services.budget")
    assert await service.audit_and_report() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await db.execute("UPDATE budget_counters SET held_micros = 5 WHERE scope = 'guild'")
    await db.execute("UPDATE budget_counters SET spent_micros = 7 WHERE scope = 'member'")
    drifts = await service.audit_and_report()
    assert sorted((d.scope, d.counter_held, d.ledger_held, d.counter_spent, d.ledger_spent) for d in drifts) == [
        ("guild", 5, 1 * USD, 0, 0),
        ("member", 1 * USD, 1 * USD, 7, 0),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("guild" in w and "held=5" in w for w in warnings)


# --- the concurrency property, through the service ----------------------------------------------


async def test_a_thousand_concurrent_admissions_through_the_service(db: Database, clock: Clock) -> None:
    rng = random.Random(2026)
    guilds = list(range(1, 21))
    members = list(range(1, 101))
    caps = {g: rng.randrange(2 * USD, 20 * USD) for g in guilds}
    daily = {g: rng.choice([None, rng.randrange(300_000, 3 * USD)]) for g in guilds}
    for g in guilds:
        await configure(db, g, monthly_limit_micros=caps[g], member_daily_limit_micros=daily[g])
    service = make_service(db, clock, global_usd=str(Decimal(sum(caps.values()) // 2) / USD))
    admitted: list[tuple[int, int]] = []
    refused: dict[str, int] = {}

    async def admit_one() -> None:
        guild, member = rng.choice(guilds), rng.choice(members)
        amount = rng.randrange(1, 1 * USD)
        try:
            admitted.append((await admit(service, db, guild, member, amount), amount))
        except BudgetExceeded as exc:
            refused[exc.scope] = refused.get(exc.scope, 0) + 1

    async def raise_limits() -> None:
        # moderators raise limits while admissions run: rows follow, caps still hold
        for g in rng.sample(guilds, 5):
            await asyncio.sleep(0)
            caps[g] = (caps[g] // USD + 1) * USD
            await service.set_limits(Actor(user_id=1, guild_id=g, manage_guild=True), str(caps[g] // USD))

    await asyncio.gather(*(admit_one() for _ in range(1000)), raise_limits())
    assert len(admitted) > 100
    assert sum(refused.values()) > 100
    assert {"guild", "global"} <= set(refused)
    await assert_balanced(service, db)

    async def finish(job_id: int, amount: int) -> None:
        async with db.transaction() as conn:
            if rng.random() < 0.3:
                await service.release(conn, job_id, NOW, "failed")
            else:
                await service.settle(conn, job_id, rng.choice([amount, rng.randrange(0, amount + 1)]), NOW)

    settled = [a for a in admitted if rng.random() < 0.7]
    await asyncio.gather(*(finish(*a) for a in settled))
    await assert_balanced(service, db)
    totals = await one(
        db,
        "SELECT SUM(CASE WHEN kind = 'hold' THEN amount_micros ELSE 0 END),"
        " SUM(CASE WHEN kind = 'capture' THEN amount_micros ELSE 0 END),"
        " SUM(CASE WHEN kind IN ('capture', 'release') THEN amount_micros ELSE 0 END) FROM ledger",
    )
    operator = await one(db, "SELECT held_micros, spent_micros FROM budget_counters WHERE scope = 'global'")
    assert operator[0] == totals[0] - totals[2]
    assert operator[1] == totals[1]
    guild_sum = await one(db, "SELECT SUM(held_micros), SUM(spent_micros) FROM budget_counters WHERE scope = 'guild'")
    member_sum = await one(db, "SELECT SUM(held_micros), SUM(spent_micros) FROM budget_counters WHERE scope = 'member'")
    assert tuple(guild_sum) == tuple(member_sum) == tuple(operator)
