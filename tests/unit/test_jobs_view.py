"""/jobs read model: own jobs, moderators see anyone's, guilds never mix, money from the ledger."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.db import Database
from bot.i18n import t
from bot.services.actors import Actor
from bot.services.budget import BudgetService
from bot.services.guilds import GuildService
from bot.services.jobs_view import JobsViewService, OthersJobsNeedModerator
from bot.store import guilds as guild_store

NOW = 1_795_000_000.0
GUILD, OTHER = 10, 20


@pytest.fixture
async def db(db: Database) -> Database:
    """The shared database, with both guilds' budgets set."""
    async with db.transaction() as conn:
        for guild in (GUILD, OTHER):
            await guild_store.upsert(conn, guild, {"monthly_limit_micros": 50_000_000}, NOW)
    return db


async def add_job(db: Database, budget: BudgetService, guild: int, user: int, amount: int, prompt: str, at: float):
    plan = await budget.plan(guild, user, paid=amount > 0, now=at)
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, request_json, providers, provider, state,"
            " estimate_micros, global_period, guild_period, member_period, created_at, updated_at)"
            " VALUES (?, 1, ?, ?, '{}', 'kling', 'kling', 'held', ?, ?, ?, ?, ?, ?) RETURNING id",
            (guild, user, prompt, amount, *(plan.periods.__dict__.values()), at, at),
        )
        row = await cursor.fetchone()
        assert row is not None
        job_id = int(row[0])
        await budget.hold(conn, job_id, plan, amount, at)
    return job_id


async def test_own_others_and_guild_isolation(db: Database) -> None:
    guilds = GuildService(db)
    budget = BudgetService(db, Settings(_env_file=None), guilds)
    view = JobsViewService(db, guilds)
    first = await add_job(db, budget, GUILD, 2, 400_000, "a cat on a skateboard", NOW)
    second = await add_job(db, budget, GUILD, 2, 900_000, "@kit waves <@123> @everyone", NOW + 60)
    await add_job(db, budget, GUILD, 3, 100_000, "someone else's", NOW + 30)
    await add_job(db, budget, OTHER, 2, 100_000, "same member, other guild", NOW + 90)
    async with db.transaction() as conn:
        await conn.execute("UPDATE jobs SET state = 'delivered' WHERE id = ?", (first,))
        await budget.settle(conn, first, 250_000, NOW + 100)

    mine = await view.recent(Actor(user_id=2, guild_id=GUILD))
    assert mine.own
    assert [j.id for j in mine.jobs] == [second, first]  # newest first, this guild only
    newest, oldest = mine.jobs
    assert (newest.state, newest.estimate_micros, newest.captured_micros) == ("held", 900_000, None)
    assert (oldest.state, oldest.captured_micros, oldest.provider) == ("delivered", 250_000, "kling")

    with pytest.raises(OthersJobsNeedModerator) as refused:
        await view.recent(Actor(user_id=3, guild_id=GUILD), member_id=2)
    assert "Only moderators" in t(refused.value.key, "en")

    as_mod = await view.recent(Actor(user_id=9, guild_id=GUILD, manage_guild=True), member_id=3)
    assert not as_mod.own
    assert [j.prompt for j in as_mod.jobs] == ["someone else's"]
    # naming yourself is always fine
    assert (await view.recent(Actor(user_id=3, guild_id=GUILD), member_id=3)).own


async def test_released_job_shows_no_cost(db: Database) -> None:
    guilds = GuildService(db)
    budget = BudgetService(db, Settings(_env_file=None), guilds)
    job = await add_job(db, budget, GUILD, 2, 300_000, "x", NOW)
    async with db.transaction() as conn:
        await budget.release(conn, job, NOW + 5, "rejected")
    (line,) = (await JobsViewService(db, guilds).recent(Actor(user_id=2, guild_id=GUILD))).jobs
    assert line.captured_micros == 0
