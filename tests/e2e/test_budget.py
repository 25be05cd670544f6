"""/budget, /jobs and /settings through the Discord sandbox, against the real bot and its database."""

from __future__ import annotations

import time

import pytest

from bot.app import Castbot
from bot.services.budget import BudgetPlan, BudgetService
from discord_sandbox import DiscordSandbox, SandboxUsageError
from tests.conftest import BotHarness, World

pytestmark = pytest.mark.e2e

USD = 1_000_000


def field(reply, name_start: str) -> str:
    for f in reply.embeds[0]["fields"]:
        if f["name"].startswith(name_start):
            return str(f["value"])
    raise AssertionError(f"no field {name_start!r} in {[f['name'] for f in reply.embeds[0]['fields']]}")


async def run(sandbox: DiscordSandbox, world: World, who, command: str, **options):
    handle = await sandbox.invoke(world.guild, world.channel, who, command, options=options)
    reply = await handle.wait_final_message()
    assert handle.is_ephemeral
    assert reply.allowed_mentions == {"parse": []}
    return reply


async def start_job(bot: Castbot, world: World, member, amount: int, prompt: str) -> tuple[BudgetService, int]:
    """What /generate's admission writes, done through BudgetService (generation is another issue)."""
    budget = BudgetService(bot.db, bot.settings, bot.services.guilds)
    now = time.time()
    plan: BudgetPlan = await budget.plan(world.guild.id, member.id, paid=True, now=now)
    async with bot.db.transaction() as conn:
        cursor = await conn.execute(
            "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, request_json, providers, provider, state,"
            " estimate_micros, global_period, guild_period, member_period, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, '{}', 'kling', 'kling', 'queued', ?, ?, ?, ?, ?, ?)",
            (
                world.guild.id,
                world.channel.id,
                member.id,
                prompt,
                amount,
                plan.periods.global_month,
                plan.periods.guild_month,
                plan.periods.member_day,
                now,
                now,
            ),
        )
        assert cursor.lastrowid is not None
        job_id = cursor.lastrowid
        await budget.hold(conn, job_id, plan, amount, now)
    return budget, job_id


async def test_commands_are_synced_with_their_options(sandbox: DiscordSandbox, castbot: Castbot) -> None:
    commands = {c["name"]: c for c in sandbox.synced_commands()}
    budget = commands["budget"]
    assert budget["default_member_permissions"] is None  # /budget show is for everyone
    subs = {o["name"]: o for o in budget["options"]}
    assert set(subs) == {"show", "set"}
    assert [(o["name"], o["required"]) for o in subs["set"]["options"]] == [
        ("monthly_usd", True),
        ("member_daily_usd", False),
    ]
    assert [o["name"] for o in commands["jobs"]["options"]] == ["member"]
    settings = {o["name"]: o for o in commands["settings"]["options"]}
    assert set(settings) >= {"moderator_role", "timezone", "locale", "providers", "priority", "fallback"}
    assert settings["timezone"]["autocomplete"]
    assert {c["value"] for c in settings["locale"]["choices"]} == {"en-US", "ru", "de", "fr", "pt-BR", "es-ES", "zh-CN"}


async def test_a_member_cannot_set_the_budget_a_moderator_can(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    refused = await run(sandbox, world, world.member, "budget set", monthly_usd="500")
    assert "Only moderators" in refused.content
    assert (await castbot.services.guilds.get(world.guild.id)).monthly_limit_micros is None

    saved = await run(sandbox, world, world.admin, "budget set", monthly_usd="$20", member_daily_usd="2,50")
    assert saved.content.startswith("Budget saved.")
    assert "Limit $20.00" in field(saved, "This server")
    assert "Daily cap $2.50" in field(saved, "You today")
    settings = await castbot.services.guilds.get(world.guild.id)
    assert (settings.monthly_limit_micros, settings.member_daily_limit_micros) == (20 * USD, 2_500_000)

    bad = await run(sandbox, world, world.admin, "budget set", monthly_usd="1e9")
    assert "isn't an amount" in bad.content
    assert (await castbot.services.guilds.get(world.guild.id)).monthly_limit_micros == 20 * USD


async def test_budget_show_follows_a_job_from_hold_to_capture(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    before = await run(sandbox, world, world.member, "budget show")
    assert "No budget set" in field(before, "This server")

    await run(sandbox, world, world.admin, "budget set", monthly_usd="10")
    budget, job = await start_job(castbot, world, world.member, 1_500_000, "a dragon")

    held = await run(sandbox, world, world.member, "budget show")
    assert "spent $0.00 · held $1.50" in field(held, "This server")
    assert "$8.50 left" in field(held, "This server")
    assert "held $1.50" in field(held, "You today")
    assert "up to **$8.50**" in held.embeds[0]["description"]
    assert not any(f["name"].startswith("Top spenders") for f in held.embeds[0]["fields"])

    async with castbot.db.transaction() as conn:
        await conn.execute("UPDATE jobs SET state = 'delivered' WHERE id = ?", (job,))
        await budget.settle(conn, job, 800_000, time.time(), reason="delivered")

    captured = await run(sandbox, world, world.member, "budget show")
    assert "spent $0.80 · held $0.00" in field(captured, "This server")
    assert "$9.20 left" in field(captured, "This server")

    as_mod = await run(sandbox, world, world.admin, "budget show")
    assert f"<@{world.member.id}> · spent $0.80" in field(as_mod, "Top spenders")
    assert not as_mod.pinged_user_ids


async def test_a_lowered_limit_is_shown_as_blocking(sandbox: DiscordSandbox, world: World, castbot: Castbot) -> None:
    await run(sandbox, world, world.admin, "budget set", monthly_usd="10")
    budget, job = await start_job(castbot, world, world.member, 3 * USD, "x")
    async with castbot.db.transaction() as conn:
        await budget.settle(conn, job, 3 * USD, time.time())
    lowered = await run(sandbox, world, world.admin, "budget set", monthly_usd="2")
    assert "more than the new limit" in lowered.content
    assert "blocked" in field(lowered, "This server")


async def test_jobs_lists_own_jobs_and_moderators_see_anyones(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    await run(sandbox, world, world.admin, "budget set", monthly_usd="10")
    await start_job(castbot, world, world.member, 400_000, "@kit dances with @everyone and <@1234567890123456789>")

    mine = await run(sandbox, world, world.member, "jobs")
    embed = mine.embeds[0]
    assert embed["title"] == "Your recent jobs"
    assert "queued · kling · holding up to $0.40" in embed["description"]
    assert "@kit dances" in embed["description"]
    assert "@everyone" not in embed["description"]  # escaped: cannot render as a mention
    assert not mine.pinged_everyone
    assert not mine.pinged_user_ids

    refused = await run(sandbox, world, world.member, "jobs", member=world.admin)
    assert "Only moderators can see other members' jobs" in refused.content

    theirs = await run(sandbox, world, world.admin, "jobs", member=world.member)
    assert theirs.embeds[0]["title"] == "Recent jobs of bob"
    assert "holding up to $0.40" in theirs.embeds[0]["description"]

    empty = await run(sandbox, world, world.admin, "jobs")
    assert "no jobs" in empty.embeds[0]["description"]


async def test_settings_show_change_and_moderator_role(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    mods = world.guild.add_role("Castbot mods")
    helper = world.guild.add_member("hana", roles=[mods])
    await harness.start()

    shown = await run(sandbox, world, world.member, "settings")
    assert field(shown, "Timezone") == "`UTC`"
    assert "local" in field(shown, "Providers")

    refused = await run(sandbox, world, world.member, "settings", timezone="Europe/Berlin")
    assert "Only moderators" in refused.content

    before_role = await run(sandbox, world, helper, "budget set", monthly_usd="5")
    assert "Only moderators" in before_role.content

    saved = await run(
        sandbox, world, world.admin, "settings", moderator_role=mods, timezone="Asia/Tokyo", fallback=True
    )
    assert "Saved:" in saved.content
    assert field(saved, "Moderator role") == f"<@&{mods.id}>"
    assert field(saved, "Timezone") == "`Asia/Tokyo`"
    assert not saved.pinged_role_ids

    after_role = await run(sandbox, world, helper, "budget set", monthly_usd="5")
    assert after_role.content.startswith("Budget saved.")
    assert "Months and days follow Asia/Tokyo" in after_role.embeds[0]["footer"]["text"]

    bad = await run(sandbox, world, world.admin, "settings", providers="kling")
    assert "isn't configured" in bad.content
    assert "`local`" in bad.content

    # the router's HealthService does the re-enabling, behind the same moderator check
    not_mod = await run(sandbox, world, world.member, "settings", enable_provider="local")
    assert "Only moderators" in not_mod.content
    enabled = await run(sandbox, world, helper, "settings", enable_provider="local")
    assert "`local` is enabled again." in enabled.content
    unknown = await run(sandbox, world, helper, "settings", enable_provider="openai")
    assert "isn't configured" in unknown.content

    choices = await sandbox.autocomplete(
        world.guild, world.channel, world.admin, "settings", focused="timezone", value="berl"
    )
    assert choices[0]["value"] == "Europe/Berlin"
    assert len(choices) <= 25


async def test_budget_commands_are_not_offered_in_dms(sandbox: DiscordSandbox, world: World, castbot: Castbot) -> None:
    with pytest.raises(SandboxUsageError):
        await sandbox.invoke(None, None, world.member, "budget show")
