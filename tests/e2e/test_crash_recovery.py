"""SIGKILL the real bot process at each commit point, restart it, and check nothing is lost or doubled.

Every job must end delivered exactly once or released; the ledger must balance; the provider must
never see the same job created twice. Engines that cannot list their jobs (Gemini Omni, fal) are
killed at each point too, and while the engine holds the create unanswered: such a job stays
uncertain with its hold kept, never sent again.
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
from discord_sandbox import MANAGE_GUILD, DiscordSandbox, StoredMessage
from discord_sandbox.clips import make_clip
from tests.conftest import SANDBOX_TOKEN, Simulators
from tests.fakes.fal_sim import FalSim
from tests.fakes.gemini_sim import GeminiSim
from tests.fakes.openai_sim import OpenAISim

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-crash-test-0123456789"
FINISHED = ("delivered", "rejected", "failed", "canceled")


@pytest.fixture
async def sim(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=API_KEY, job_seconds=0.3, poll_after_ms=100))


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


# --- engines that cannot list their jobs: Gemini Omni and fal ---------------------------------------

GEMINI_KEY = "AIzaSy-crash-test-0123456789"
FAL_KEY = "fal-crash-test:0123456789abcdef"
# the points where an engine's lack of a job list matters; later ones are the same code for every
# provider and covered above
ENGINE_POINTS = ("after_attempt", "in_flight", "after_accepted")


@pytest.fixture
async def engines() -> AsyncIterator[tuple[GeminiSim, FalSim]]:
    gemini = GeminiSim(api_key=GEMINI_KEY, video_seconds=0.3)
    fal = FalSim(api_key=FAL_KEY, job_seconds=0.3)
    await gemini.start()
    await fal.start()
    yield gemini, fal
    await gemini.close()
    await fal.close()


def engine_env(
    base: dict[str, str], engine: str, gemini: GeminiSim, fal: FalSim, crash_at: str | None
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("OPENAI_") and k != CRASH_ENV}
    env.update(
        PROVIDERS=engine,
        GEMINI_API_KEY=GEMINI_KEY,
        GEMINI_BASE_URL=gemini.base_url,
        FAL_KEY=FAL_KEY,
        FAL_QUEUE_URL=fal.queue_url,
        FAL_REST_URL=fal.rest_url,
        FAL_CDN_URL=fal.cdn_url,
    )
    if crash_at and crash_at != "in_flight":
        env[CRASH_ENV] = crash_at
    return env


def sent_and_made(engine: str, gemini: GeminiSim, fal: FalSim) -> tuple[int, int]:
    """(create requests the engine received, jobs it made)."""
    if engine == "gemini":
        return len(gemini.creates), len(gemini.interactions)
    return len(fal.submits()), len(fal.jobs)


def job_row(data_dir: Path) -> dict[str, object]:
    path = data_dir / "castbot.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM jobs WHERE id = 1").fetchone()
    return dict(row) if row is not None else {}


@pytest.mark.parametrize("crash_at", ENGINE_POINTS)
@pytest.mark.parametrize("engine", ["gemini", "fal"])
async def test_an_engine_without_a_job_list_never_gets_a_job_twice_across_a_crash(
    engine: str,
    crash_at: str,
    sandbox: DiscordSandbox,
    sim: OpenAISim,
    engines: tuple[GeminiSim, FalSim],
    tmp_path: Path,
) -> None:
    gemini, fal = engines
    guild = sandbox.add_guild("Castle")
    channel = guild.add_text_channel("general")
    admin = guild.add_member("ada", permissions=MANAGE_GUILD)
    member = guild.add_member("bob")
    data_dir = tmp_path / "data"
    await prepare_guild_budget(data_dir, guild.id, admin.id)
    base = bot_env(sandbox, sim, data_dir, guild.id, None)
    clip = make_clip(tmp_path / "mira.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()

    first = await start_bot(tmp_path, engine_env(base, engine, gemini, fal, crash_at))
    try:
        await sandbox.wait_ready(timeout=30)
        video = sandbox.add_attachment(clip, "mira.mp4", "video/mp4")
        created = await sandbox.invoke(guild, channel, member, "character create", name="Mira", video=video)
        assert "Created `@Mira`" in (await created.wait_final_message(timeout=30)).content
        if crash_at == "in_flight":  # the engine makes the job and never answers: the bot dies waiting
            if engine == "gemini":
                gemini.add_fault("create", "read_timeout", create=True)
            else:
                fal.add_fault("submit", "read_timeout", create=True)
        await sandbox.invoke(guild, channel, member, "generate", prompt="@Mira folds a paper boat", seconds=5)
        if crash_at == "in_flight":
            await sandbox.wait_for(lambda: sent_and_made(engine, gemini, fal) == (1, 1) or None, 30, "the create")
            first.kill()
        await asyncio.wait_for(first.wait(), 30)
    finally:
        await stop(first)
    assert first.returncode == -signal.SIGKILL, f"expected a crash at {crash_at}"
    await sandbox.wait_disconnected(timeout=10)

    second = await start_bot(tmp_path, engine_env(base, engine, gemini, fal, None))
    try:
        await sandbox.wait_ready(timeout=30)
        if crash_at in ("after_attempt", "in_flight"):
            # Uncertain whether it left: the hold stays, and the job is never sent again
            seen: set[object] = set()

            def looked_at_three_times() -> bool | None:
                row = job_row(data_dir)
                if row.get("state") == "ambiguous":
                    seen.add(row["next_poll_at"])
                return len(seen) >= 3 or None

            await sandbox.wait_for(looked_at_three_times, 30, "three reconcile passes after the restart")
        else:

            def finished() -> bool | None:
                row = job_row(data_dir)
                return (row.get("state") == "delivered" and row.get("notified_at") is not None) or None

            await sandbox.wait_for(finished, 30, f"job 1 to be delivered after a crash at {crash_at}")
    finally:
        await stop(second)
    assert second.returncode == 0

    posts = final_posts(sandbox, channel.visible_messages)
    row = job_row(data_dir)
    db = await Database.open(data_dir / "castbot.sqlite3")
    try:
        async with db.transaction() as conn:
            assert await budgets.audit(conn) == []
        held = await db.fetchone("SELECT SUM(held_micros) FROM budget_counters WHERE scope = 'guild'")
        kinds = [r["kind"] for r in await db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
    finally:
        await db.close()
    assert held is not None
    if crash_at in ("after_attempt", "in_flight"):
        assert sent_and_made(engine, gemini, fal) == ((0, 0) if crash_at == "after_attempt" else (1, 1))
        assert row["state"] == "ambiguous" and row["external_id"] is None
        assert kinds == ["hold"] and held[0] == row["estimate_micros"]
        assert posts == []
    else:
        assert sent_and_made(engine, gemini, fal) == (1, 1)
        assert len(posts) == 1 and len(posts[0].attachments) == 1
        served = gemini.video_bytes if engine == "gemini" else fal.video_bytes
        assert posts[0].attachments[0].data == served
        assert kinds == ["hold", "capture", "release"] or kinds == ["hold", "capture"]
        assert held[0] == 0
