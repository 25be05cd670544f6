"""The real bot on PostgreSQL (DATABASE_URL): /character create and /generate end to end through
the Discord sandbox, the video posted once, the money on the ledger, the job held by this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.db_postgres import PostgresDatabase
from discord_sandbox import DiscordSandbox
from tests.conftest import BotHarness, World
from tests.e2e.test_generate import bot_messages, clip_bytes, create_character, wait_result, wait_row
from tests.postgres import PostgresServer

__all__ = ["clip_bytes"]  # a fixture


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    url = await postgres_server.new_database(migrated=False)  # the bot migrates it at start
    yield url
    await postgres_server.drop_database(url)


async def test_generate_on_postgresql_posts_once_and_survives_a_restart(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip_bytes: bytes, database_url: str, tmp_path: Path
) -> None:
    bot = await harness.start(database_url=database_url)
    assert isinstance(bot.db, PostgresDatabase)
    await create_character(sandbox, world, "Mira", clip_bytes)
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="@Mira waves", seconds=4)
    assert "Job #1 is queued" in (await handle.wait_final_message(timeout=10)).content
    result = await wait_result(sandbox, world, 1)
    assert len(result.attachments) == 1
    # the bot commits after Discord answers
    job = await wait_row(bot, "SELECT state, result_message_id, lease_owner FROM jobs WHERE id = 1 AND notified_at > 0")
    assert (job["state"], job["result_message_id"]) == ("delivered", result.id)
    assert job["lease_owner"] == bot.db.lease_owner  # this process did the work
    kinds = [r["kind"] for r in await bot.db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
    assert kinds == ["hold", "release"]

    # a second process (a restart under a new lease name) takes the next job and posts it once
    bot = await harness.restart(database_url=database_url)
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="@Mira bows", seconds=4)
    assert "Job #2 is queued" in (await handle.wait_final_message(timeout=10)).content
    await wait_result(sandbox, world, 2)
    bot.services.wake_loop()
    await asyncio.sleep(0.3)
    for job_id in (1, 2):
        assert sum(1 for m in bot_messages(sandbox, world) if f"job #{job_id}" in m.content) == 1
    await harness.stop()  # before its database is dropped
