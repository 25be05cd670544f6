"""/generate end to end with the offline local provider: status message, progress, MP4 posted once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import av
import pytest

from bot.app import Castbot
from discord_sandbox import DiscordSandbox, StoredMessage
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, World
from tests.helpers import confirm_consent


@pytest.fixture
def clip_bytes(tmp_path: Path) -> bytes:
    return make_clip(tmp_path / "mira.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()


async def create_character(sandbox: DiscordSandbox, world: World, name: str, clip: bytes) -> None:
    video = sandbox.add_attachment(clip, f"{name}.mp4", "video/mp4")
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "character create", name=name, video=video)
    reply = await handle.wait_final_message(timeout=20)
    assert name in (reply.content + str(reply.embeds)), reply.content


def bot_messages(sandbox: DiscordSandbox, world: World) -> list[StoredMessage]:
    return [m for m in world.channel.visible_messages if m.author.id == sandbox.bot.id]


async def wait_result(sandbox: DiscordSandbox, world: World, job: int, timeout: float = 30) -> StoredMessage:
    def found() -> StoredMessage | None:
        for m in bot_messages(sandbox, world):
            if f"job #{job}" in m.content and m.message_reference is not None:
                return m
        return None

    return await sandbox.wait_for(found, timeout, f"the result of job #{job}")


async def wait_row(bot: Castbot, sql: str, timeout: float = 10) -> Any:
    """Poll the bot's database until `sql` returns a row (the bot commits after Discord answers)."""
    async with asyncio.timeout(timeout):
        while (row := await bot.db.fetchone(sql)) is None:
            await asyncio.sleep(0.02)
    return row


def duration_of(data: bytes, tmp_path: Path) -> float:
    path = tmp_path / "posted.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.duration is not None and stream.time_base is not None
        return float(stream.duration * stream.time_base)


async def test_generate_posts_the_video_once_in_the_channel(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip_bytes: bytes, tmp_path: Path
) -> None:
    await create_character(sandbox, world, "Mira", clip_bytes)
    handle = await sandbox.invoke(
        world.guild, world.channel, world.member, "generate", prompt="@Mira waves at @everyone", seconds=4
    )
    ack = await handle.wait_response()
    assert ack["type"] == 5  # deferred first: Discord's 3 s limit
    queued = await handle.wait_final_message(timeout=10)
    assert handle.is_ephemeral
    assert "Job #1 is queued" in queued.content

    status = await sandbox.wait_for(
        lambda: next((m for m in bot_messages(sandbox, world) if m.embeds and m.embeds[0]["title"] == "Job #1"), None)
    )
    assert any(c["custom_id"] == "castbot:cancel:1" for row in status.components for c in row["components"])
    assert "@Mira" in str(status.embeds[0]["fields"])

    result = await wait_result(sandbox, world, 1)
    assert result.message_reference is not None
    assert int(result.message_reference["message_id"]) == status.id
    # only the requester is pinged, never @everyone from the prompt
    assert result.pinged_user_ids == [world.member.id]
    assert not result.pinged_everyone
    assert len(result.attachments) == 1
    posted = result.attachments[0].data
    stored = castbot.settings.data_dir / "videos" / "job-1.mp4"
    assert posted == stored.read_bytes()
    assert duration_of(posted, tmp_path) == pytest.approx(4.0, abs=0.5)
    custom_ids = {c["custom_id"] for row in result.components for c in row["components"]}
    assert custom_ids == {"castbot:reroll:1", "castbot:mkchar:1"}

    # the status message ends in its final state without the Cancel button
    await sandbox.wait_for(lambda: "delivered" in str(sandbox.message(status.id).embeds) or None)
    assert sandbox.message(status.id).components == []

    job = await castbot.db.fetchone("SELECT state, result_message_id, notified_at FROM jobs WHERE id = 1")
    assert job is not None
    assert job["state"] == "delivered"
    assert job["result_message_id"] == result.id
    kinds = [r["kind"] for r in await castbot.db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
    assert kinds == ["hold", "release"]  # local is free: nothing captured, the zero hold released

    # nothing else gets posted for this job, however long the loop keeps running
    castbot.services.wake_loop()
    await asyncio.sleep(0)  # let the loop take one more pass
    await sandbox.wait_for(lambda: castbot.services.loop_wakeup.is_set() is False or None)
    assert sum(1 for m in bot_messages(sandbox, world) if "job #1" in m.content) == 1


async def test_unknown_character_is_refused_with_close_matches_and_nothing_held(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip_bytes: bytes
) -> None:
    await create_character(sandbox, world, "Mira", clip_bytes)
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="@Mirra and @Zed dance")
    reply = await handle.wait_final_message(timeout=10)
    assert handle.is_ephemeral
    assert "`@mirra`" in reply.content.lower()
    assert "`@zed`" in reply.content.lower()
    assert "did you mean `@mira`" in reply.content.lower()  # the close match is offered
    assert await castbot.db.fetchone("SELECT 1 FROM jobs") is None
    assert await castbot.db.fetchone("SELECT 1 FROM ledger") is None


async def test_cancel_before_submission_releases_the_hold(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip_bytes: bytes
) -> None:
    bot = await harness.start()
    # Pause the delivery loop so the job stays held (not yet sent to any provider).
    await bot.remove_cog("DeliveryCog")
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a quiet lake")
    await handle.wait_final_message(timeout=10)
    status = await sandbox.wait_for(lambda: next((m for m in bot_messages(sandbox, world) if m.embeds), None))
    click = await sandbox.click(status, "castbot:cancel:1", world.member)
    answer = await click.wait_final_message()
    assert "canceled" in answer.content
    job = await bot.db.fetchone("SELECT state FROM jobs WHERE id = 1")
    assert job is not None
    assert job["state"] == "canceled"
    kinds = [r["kind"] for r in await bot.db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
    assert kinds == ["hold", "release"]


async def test_imported_character_works_until_the_owner_revokes_it(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip_bytes: bytes
) -> None:
    await create_character(sandbox, world, "Fox", clip_bytes)
    share = await sandbox.invoke(
        world.guild, world.channel, world.member, "character share", name="fox", visibility="public"
    )
    shared = await confirm_consent(sandbox, share, world.member)
    code = next(f["value"] for f in shared.embeds[0]["fields"] if f["name"] == "Share code").split("`")[1]
    other = (world.other_guild, world.other_channel, world.other_member)
    imported = await sandbox.invoke(*other, "character import", code=code, name="Vulpes")
    assert "Imported `@Vulpes`" in (await imported.wait_final_message()).content

    # the other server can generate with its alias: the prompt's @Vulpes is the shared character
    first = await sandbox.invoke(*other, "generate", prompt="@Vulpes jumps over a fence", seconds=2)
    assert "Job #1 is queued" in (await first.wait_final_message(timeout=10)).content
    posted = await sandbox.wait_for(
        lambda: next((m for m in world.other_channel.visible_messages if m.attachments), None), 30
    )
    assert "job #1" in posted.content

    revoke = await sandbox.invoke(
        world.guild, world.channel, world.member, "character share", name="fox", visibility="private"
    )
    await revoke.wait_final_message()
    refused = await sandbox.invoke(*other, "generate", prompt="@Vulpes jumps again")
    reply = await refused.wait_final_message(timeout=10)
    assert refused.is_ephemeral
    assert "stopped sharing it" in reply.content
    assert "nothing was started or charged" in reply.content
    jobs = await castbot.db.fetchall("SELECT id FROM jobs")
    assert [j["id"] for j in jobs] == [1]  # the refused request left no job and no hold
    holds = await castbot.db.fetchall("SELECT job_id FROM ledger WHERE kind = 'hold'")
    assert [h["job_id"] for h in holds] == [1]


async def test_result_buttons_reroll_and_make_character(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clip_bytes: bytes
) -> None:
    await create_character(sandbox, world, "Mira", clip_bytes)
    first = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="@Mira bows", seconds=2)
    await first.wait_final_message(timeout=10)
    result = await wait_result(sandbox, world, 1)

    # Re-roll: the same request again, as a new job with its own hold
    reroll = await sandbox.click(result, "castbot:reroll:1", world.member)
    assert "Job #2 is queued" in (await reroll.wait_final_message(timeout=10)).content
    await wait_result(sandbox, world, 2)
    second = await castbot.db.fetchone("SELECT prompt, request_json FROM jobs WHERE id = 2")
    original = await castbot.db.fetchone("SELECT prompt, request_json FROM jobs WHERE id = 1")
    assert second is not None
    assert original is not None
    assert (second["prompt"], second["request_json"]) == (original["prompt"], original["request_json"])

    # Make character: asks for a name, then extracts a character from the finished video
    make = await sandbox.click(result, "castbot:mkchar:1", world.member)
    await make.wait_modal()
    submitted = await sandbox.submit_modal(make, {"name": "MiraTwo", "description": "from job 1"})
    created = await submitted.wait_final_message(timeout=20)
    assert "Created `@MiraTwo`" in created.content
    row = await castbot.db.fetchone("SELECT source_job_id FROM characters WHERE name = 'MiraTwo'")
    assert row is not None
    assert row["source_job_id"] == 1


async def test_no_permission_in_the_channel_sends_the_video_by_dm(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="rain on a window")
    reply = await handle.wait_final_message(timeout=10)
    assert "Job #1" in reply.content
    world.channel.deny_bot()  # the bot loses Send Messages before the result is ready
    dm = sandbox.dm_channel(world.member)
    message = await sandbox.wait_for(lambda: next((m for m in dm.messages if m.attachments), None), 30)
    assert "job #1" in message.content
    job = await wait_row(castbot, "SELECT state, notified_at FROM jobs WHERE id = 1 AND notified_at IS NOT NULL")
    assert job["state"] == "delivered"  # the result is kept for /jobs even though the channel refused it
