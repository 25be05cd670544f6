"""SIGKILL the real bot process at each commit point, restart it, and check nothing is lost or doubled.

Every job must end delivered exactly once or released; the ledger must balance; the provider must
never see the same job created twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.db import Database
from bot.faults import ENV as CRASH_ENV
from bot.faults import POINTS
from bot.services.actors import Actor
from bot.services.guilds import GuildService
from bot.store import budgets
from tests.conftest import SANDBOX_TOKEN
from tests.fakes.discord_sandbox import MANAGE_GUILD, DiscordSandbox, StoredMessage
from tests.fakes.openai_sim import OpenAISim

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-crash-test-0123456789"
FINISHED = ("delivered", "rejected", "failed", "canceled")


@pytest.fixture
async def sim() -> AsyncIterator[OpenAISim]:
    simulator = OpenAISim(api_key=API_KEY, job_seconds=0.3, poll_after_ms=100)
    await simulator.start()
    yield simulator
    await simulator.close()


def bot_env(
    sandbox: DiscordSandbox, sim: OpenAISim, data_dir: Path, guild_id: int, crash_at: str | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN")) and k != CRASH_ENV}
    env.update(
        PYTHONPATH=str(REPO),
        DISCORD_TOKEN=SANDBOX_TOKEN,
        DISCORD_API_BASE=sandbox.api_base,
        DISCORD_GATEWAY_URL=sandbox.gateway_url,
        COMMAND_GUILD_ID=str(guild_id),
        DATA_DIR=str(data_dir),
        PROVIDERS="openai",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=sim.base_url,
        POLL_MIN_SECONDS="0.05",
        POLL_MAX_SECONDS="0.3",
        RECONCILE_GRACE_SECONDS="1",
        LOG_LEVEL="INFO",
    )
    if crash_at:
        env[CRASH_ENV] = crash_at
    return env


async def start_bot(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    # the bot's log goes to a file in the test's folder: read it when a test fails
    with (tmp_path / "bot.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def job_state(data_dir: Path) -> tuple[str, float | None] | None:
    path = data_dir / "castbot.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT state, notified_at FROM jobs WHERE id = 1").fetchone()
    return None if row is None else (row[0], row[1])


async def prepare_guild_budget(data_dir: Path, guild_id: int, admin_id: int) -> None:
    db = await Database.open(data_dir / "castbot.sqlite3")
    try:
        await db.migrate()
        await GuildService(db).update(
            Actor(user_id=admin_id, guild_id=guild_id, manage_guild=True), monthly_limit_micros=20_000_000
        )
    finally:
        await db.close()


def final_posts(sandbox: DiscordSandbox, channel_messages: list[StoredMessage]) -> list[StoredMessage]:
    return [m for m in channel_messages if m.author.id == sandbox.bot.id and "job #1" in m.content]


@pytest.mark.parametrize("crash_at", POINTS)
async def test_killed_at_each_commit_point_then_restarted(
    crash_at: str, sandbox: DiscordSandbox, sim: OpenAISim, tmp_path: Path
) -> None:
    guild = sandbox.add_guild("Castle")
    channel = guild.add_text_channel("general")
    admin = guild.add_member("ada", permissions=MANAGE_GUILD)
    member = guild.add_member("bob")
    data_dir = tmp_path / "data"
    await prepare_guild_budget(data_dir, guild.id, admin.id)

    if crash_at == "after_hold":
        sandbox.allow_pending("killed between the defer and the follow-up; the channel post tells the member")
    first = await start_bot(tmp_path, bot_env(sandbox, sim, data_dir, guild.id, crash_at))
    try:
        await sandbox.wait_ready(timeout=30)
        await sandbox.invoke(guild, channel, member, "generate", prompt="a paper boat on a rainy street", seconds=4)
        await asyncio.wait_for(first.wait(), 30)
    finally:
        await stop(first)
    assert first.returncode == -signal.SIGKILL, f"expected a crash at {crash_at}"
    await sandbox.wait_disconnected(timeout=10)

    second = await start_bot(tmp_path, bot_env(sandbox, sim, data_dir, guild.id, None))
    try:
        await sandbox.wait_ready(timeout=30)

        def finished() -> tuple[str, float | None] | None:
            state = job_state(data_dir)
            return state if state and state[0] in FINISHED and state[1] is not None else None

        state, _ = await sandbox.wait_for(finished, 30, f"job 1 to finish after a crash at {crash_at}")
    finally:
        await stop(second)
    assert second.returncode == 0, (await second.stderr.read()).decode()[-2000:] if second.stderr else ""

    posts = final_posts(sandbox, channel.visible_messages)
    assert len(posts) == 1, [p.content for p in posts]  # exactly one final message, whatever happened
    creates = len(sim.creates())
    if state == "delivered":
        assert creates == 1
        assert len(posts[0].attachments) == 1
        assert posts[0].attachments[0].data == sim.video_bytes
    else:
        # only a crash before the request left can end released, and then nothing was created
        assert crash_at == "after_attempt", state
        assert creates == 0
        assert "never received" in posts[0].content

    db = await Database.open(data_dir / "castbot.sqlite3")
    try:
        async with db.transaction() as conn:
            assert await budgets.audit(conn) == []
        held = await db.fetchone("SELECT SUM(held_micros) FROM budget_counters")
        assert held is not None
        assert held[0] == 0  # no money left on hold
        kinds = [r["kind"] for r in await db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
        assert kinds[0] == "hold"
        assert kinds.count("capture") == (1 if state == "delivered" else 0)
        assert kinds.count("release") == 1
    finally:
        await db.close()
