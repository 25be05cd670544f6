"""The first end-to-end path: the real bot connects, syncs, and answers /about."""

from __future__ import annotations

import logging
import re
import sqlite3

import pytest

from bot.app import Castbot
from discord_sandbox import DiscordSandbox
from tests.conftest import SANDBOX_TOKEN, BotHarness, World


async def test_bot_identifies_and_syncs_its_commands(sandbox: DiscordSandbox, castbot: Castbot) -> None:
    identify = sandbox.identify_payload
    assert identify is not None
    assert identify["token"] == SANDBOX_TOKEN
    assert identify["intents"] & 1  # the guilds intent, for boost tiers
    names = {c["name"] for c in sandbox.synced_commands()}
    assert "about" in names
    about = next(c for c in sandbox.synced_commands() if c["name"] == "about")
    assert 0 < len(about["description"]) <= 100


async def test_about_reports_version_and_providers(sandbox: DiscordSandbox, world: World, castbot: Castbot) -> None:
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "about")
    reply = await handle.wait_final_message()
    assert handle.is_ephemeral
    embed = reply.embeds[0]
    assert embed["title"].startswith("Castbot ")
    providers = next(f for f in embed["fields"] if f["name"] == "Providers")
    assert "**local**" in providers["value"]
    assert "offline, free" in providers["value"]
    assert reply.allowed_mentions == {"parse": []}


async def test_commands_sync_to_one_guild_when_configured(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    await harness.start(command_guild_id=world.guild.id)
    assert [c["name"] for c in sandbox.synced_commands(world.guild)] != []
    assert sandbox.synced_commands() == []


async def test_unexpected_error_gives_a_reference_and_logs_it(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await harness.start()
    # Break the database under the running bot: /about can no longer read provider health.
    with sqlite3.connect(harness.settings().database_path) as conn:
        conn.execute("DROP TABLE provider_health")
    caplog.set_level(logging.ERROR, logger="bot.app")
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "about")
    reply = await handle.wait_final_message()
    assert handle.is_ephemeral
    match = re.search(r"Something went wrong \(ref ([0-9A-F]{4})\)", reply.content)
    assert match, reply.content
    ref = match.group(1)
    records = [r for r in caplog.records if f"ref={ref}" in r.getMessage()]
    assert len(records) == 1
    logged = records[0].getMessage()
    assert "command=about" in logged
    assert f"guild={world.guild.id}" in logged
    assert f"user={world.member.id}" in logged
    assert records[0].exc_info is not None
    assert bot.is_ready()
