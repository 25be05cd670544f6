"""The janitor through the real bot: a delivered video past its retention is deleted, Make
character then says the video is no longer kept (Re-roll still works), and /about shows the space
used to moderators only."""

from __future__ import annotations

import asyncio

import pytest

from bot.i18n import t
from discord_sandbox import DiscordSandbox, StoredMessage
from tests.conftest import BotHarness, World

pytestmark = pytest.mark.e2e


async def wait_result(sandbox: DiscordSandbox, world: World, job: int) -> StoredMessage:
    def found() -> StoredMessage | None:
        for m in world.channel.visible_messages:
            if m.author.id == sandbox.bot.id and f"job #{job}" in m.content and m.message_reference is not None:
                return m
        return None

    return await sandbox.wait_for(found, 30, f"the result of job #{job}")


async def test_a_deleted_video_is_said_to_be_no_longer_kept(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    bot = await harness.start(video_retention_days=0.00001)  # under a second
    first = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a fox", seconds=2)
    await first.wait_final_message(timeout=10)
    result = await wait_result(sandbox, world, 1)
    video = bot.settings.data_dir / "videos" / "job-1.mp4"
    assert video.is_file()
    row = None
    async with asyncio.timeout(10):
        while row is None:  # notified_at is written just after the post
            row = await bot.db.fetchone("SELECT 1 FROM jobs WHERE id = 1 AND notified_at IS NOT NULL")
            await asyncio.sleep(0.02)
    job = await bot.db.fetchone("SELECT external_id FROM jobs WHERE id = 1")
    assert job is not None
    render = bot.settings.data_dir / "local-renders" / job["external_id"]
    assert render.is_dir()  # the local provider's own copy
    await asyncio.sleep(1.0)
    report = await bot.services.storage.sweep()
    assert report.videos == 1
    assert not video.exists()
    assert not render.exists()

    make = await sandbox.click(result, "castbot:mkchar:1", world.member)
    answer = await make.wait_final_message(timeout=10)
    assert answer.content == t("characters.extract.video_not_kept", "en")
    reroll = await sandbox.click(result, "castbot:reroll:1", world.member)
    assert "Job #2 is queued" in (await reroll.wait_final_message(timeout=10)).content


async def test_about_shows_the_space_used_to_moderators_only(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    await harness.start(data_max_gb="0.05")
    admin = await sandbox.invoke(world.guild, world.channel, world.admin, "about")
    embed = (await admin.wait_final_message(timeout=10)).embeds[0]
    storage = next(f for f in embed["fields"] if f["name"] == "Storage (moderators only)")
    assert "of 50 MB (`DATA_MAX_GB`)" in storage["value"]
    member = await sandbox.invoke(world.guild, world.channel, world.member, "about")
    fields = (await member.wait_final_message(timeout=10)).embeds[0]["fields"]
    assert all(f["name"] != "Storage (moderators only)" for f in fields)
