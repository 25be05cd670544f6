"""Sharding end to end: the real bot runs several Discord shards in one process, and several
`python -m bot` processes split the shards of one bot (SHARD_COUNT, SHARD_IDS), each answering the
interactions of the guilds on its own shards and reporting its own shards on /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from discord_sandbox import Channel, DiscordSandbox, Guild, Member, StoredMessage
from tests.conftest import SANDBOX_TOKEN, BotHarness
from tests.e2e.test_http_endpoint import HTTP, free_port, wait_health
from tests.e2e.test_process import clean_env, run_bot

pytestmark = pytest.mark.e2e


def on_shards(sandbox: DiscordSandbox, shard_count: int) -> list[tuple[Guild, Channel, Member]]:
    """One guild on each shard, with a channel and a member."""
    out = []
    for shard_id in range(shard_count):
        guild = sandbox.add_guild(f"guild on shard {shard_id}", shard=(shard_id, shard_count))
        out.append((guild, guild.add_text_channel("general"), guild.add_member(f"member{shard_id}")))
    return out


async def generate(sandbox: DiscordSandbox, guild: Guild, channel: Channel, member: Member) -> StoredMessage:
    """/generate in `guild`; returns the posted video (the job is #1 in each process's own database)."""
    handle = await sandbox.invoke(guild, channel, member, "generate", prompt="a quiet lake at dawn", seconds=4)
    queued = await handle.wait_final_message(timeout=20)
    assert "is queued" in queued.content, queued.content

    def posted() -> StoredMessage | None:
        return next(
            (m for m in channel.visible_messages if m.author.id == sandbox.bot.id and m.attachments),
            None,
        )

    return await sandbox.wait_for(posted, 30, f"the video in {guild.name}")


async def test_the_bot_runs_the_shards_discord_recommends_and_answers_on_each(
    sandbox: DiscordSandbox, harness: BotHarness
) -> None:
    sandbox.gateway.recommended_shards = 2
    sandbox.gateway.max_concurrency = 2  # both shards identify at once, as Discord allows
    places = on_shards(sandbox, 2)
    bot = await harness.start()  # no SHARD_COUNT: the count is Discord's recommendation

    sessions = await sandbox.wait_shards(2)
    assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
    assert sorted(s.identify["shard"] for s in sessions.values()) == [[0, 2], [1, 2]]
    assert len(sandbox.calls_to("GET", r"^/gateway/bot$")) == 1
    # discord.py's default would wait 5 s before the second IDENTIFY; max_concurrency 2 lets it go at once
    first, second = sorted(s.identified_at for s in sessions.values())
    assert second - first < 4
    assert {g.id for g in bot.guilds} == {guild.id for guild, _, _ in places}

    for shard_id, (guild, channel, member) in enumerate(places):
        video = await generate(sandbox, guild, channel, member)
        assert video.pinged_user_ids == [member.id]
        assert [r.shard for r in sandbox.interactions.by_id.values() if r.channel is channel] == [(shard_id, 2)]


async def test_shards_in_one_identify_bucket_wait_five_seconds_apart(
    sandbox: DiscordSandbox, harness: BotHarness
) -> None:
    places = on_shards(sandbox, 2)
    bot = await harness.start(shard_count=2)  # the sandbox's max_concurrency is 1: one bucket
    sessions = await sandbox.wait_shards(2)
    first, second = sessions[0].identified_at, sessions[1].identified_at
    assert second - first >= 5 - 0.1  # Discord takes one IDENTIFY per bucket every 5 s
    assert bot.max_concurrency == 1
    guild, channel, member = places[1]
    handle = await sandbox.invoke(guild, channel, member, "about")
    await handle.wait_final_message()
    assert handle.record.shard == (1, 2)


async def test_healthz_names_the_shard_that_is_down(
    sandbox: DiscordSandbox, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.gateway.max_concurrency = 2
    on_shards(sandbox, 2)
    bot = await harness.start(shard_count=2, **HTTP)
    body = await wait_health(bot, 200)
    assert body["checks"]["gateway"] == {"ok": True, "detail": "ok", "shards": {"0": "ok", "1": "ok"}}

    # shard 1's socket drops and the sandbox holds its RESUME / IDENTIFY; shard 0 stays up
    released = asyncio.Event()
    gateway = sandbox.gateway
    resume, identify = gateway._resume, gateway._identify

    def on_shard_1(data: Any) -> bool:
        session = gateway.sessions.get(str(data.get("session_id")))
        return data.get("shard") == [1, 2] or (session is not None and session.shard == (1, 2))

    async def held_resume(connection: Any, data: Any) -> bool:
        if on_shard_1(data):
            await released.wait()
        return await resume(connection, data)

    async def held_identify(connection: Any, data: Any) -> bool:
        if on_shard_1(data):
            await released.wait()
        return await identify(connection, data)

    monkeypatch.setattr(gateway, "_resume", held_resume)
    monkeypatch.setattr(gateway, "_identify", held_identify)
    await sandbox.drop_connections(shard_id=1)
    body = await wait_health(bot, 503)
    assert body["failed"] == ["gateway"]
    assert body["checks"]["gateway"]["detail"] == "shard 1 disconnected"
    assert body["checks"]["gateway"]["shards"] == {"0": "ok", "1": "disconnected"}

    released.set()
    body = await wait_health(bot, 200)
    assert body["checks"]["gateway"]["shards"] == {"0": "ok", "1": "ok"}


async def start_shard_process(
    sandbox: DiscordSandbox, home: Path, shard_count: str, shard_ids: str, http_port: int, **env: str
) -> asyncio.subprocess.Process:
    """`python -m bot` in `home` (its DATA_DIR is home/data) running `shard_ids` of `shard_count`,
    with /healthz on `http_port` and the fast local provider; `env` adds or overrides settings."""
    home.mkdir(parents=True, exist_ok=True)
    settings = {
        "DISCORD_TOKEN": SANDBOX_TOKEN,
        "DISCORD_API_BASE": sandbox.api_base,
        "DISCORD_GATEWAY_URL": sandbox.gateway_url,
        "SHARD_COUNT": shard_count,
        "SHARD_IDS": shard_ids,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "LOCAL_RENDER_SECONDS": "0.2",
        "POLL_MIN_SECONDS": "0.05",
        "POLL_MAX_SECONDS": "0.5",
    }
    return await run_bot(home, clean_env(home, **{**settings, **env}))


def jobs_by_guild(data_dir: Path) -> dict[int, str]:
    """guild -> job state in one process's own database."""
    with contextlib.closing(sqlite3.connect(data_dir / "castbot.sqlite3")) as db:
        return {int(guild): state for guild, state in db.execute("SELECT guild_id, state FROM jobs")}


async def test_two_processes_split_four_shards_and_each_answers_its_own_guilds(
    tmp_path: Path, sandbox: DiscordSandbox
) -> None:
    sandbox.gateway.max_concurrency = 4
    places = on_shards(sandbox, 4)
    ranges = {"low": ("0-1", [0, 1]), "high": ("2-3", [2, 3])}
    ports = {name: free_port() for name in ranges}
    procs = {}
    for name, (shard_ids, _) in ranges.items():
        # each process its own DATA_DIR and SQLite file: a shared store needs DATABASE_URL (PostgreSQL)
        procs[name] = await start_shard_process(sandbox, tmp_path / name, "4", shard_ids, ports[name])
    try:
        sessions = await sandbox.wait_shards(4, timeout=60)
        assert {i: s.identify["shard"] for i, s in sessions.items()} == {i: [i, 4] for i in range(4)}
        # only the process that runs shard 0 synced the commands
        assert len(sandbox.calls_to("PUT", r"/commands$")) == 1

        for name, port in ports.items():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                async with asyncio.timeout(30):
                    while (response := await client.get("/healthz")).status_code != 200:
                        await asyncio.sleep(0.1)
            own = {str(i): "ok" for i in ranges[name][1]}
            assert response.json()["checks"]["gateway"]["shards"] == own

        for guild, channel, member in places:
            await generate(sandbox, guild, channel, member)
        # each interaction reached one process, the one whose shards hold its guild: only it made the job
        wanted = {name: {places[i][0].id: "delivered" for i in owned} for name, (_, owned) in ranges.items()}
        async with asyncio.timeout(20):  # the post is recorded just after it lands
            while {name: jobs_by_guild(tmp_path / name / "data") for name in ranges} != wanted:
                await asyncio.sleep(0.05)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.terminate()
        outputs = {name: await asyncio.wait_for(proc.communicate(), 20) for name, proc in procs.items()}

    assert all(proc.returncode == 0 for proc in procs.values()), {n: o[1][-2000:] for n, o in outputs.items()}
    assert sorted(r.shard or (0, 1) for r in sandbox.interactions.by_id.values()) == [(i, 4) for i in range(4)]
    assert not any(r.rejected for r in sandbox.interactions.by_id.values())  # nobody answered twice
    assert "commands are synced by the process that runs shard 0" in outputs["high"][0].decode()


async def test_too_many_guilds_for_one_shard_is_one_clear_line_and_exit_2(
    tmp_path: Path, sandbox: DiscordSandbox
) -> None:
    sandbox.gateway.max_guilds_per_shard = 1
    sandbox.add_guild("one")
    sandbox.add_guild("two")
    env = clean_env(
        tmp_path,
        DISCORD_TOKEN=SANDBOX_TOKEN,
        DISCORD_API_BASE=sandbox.api_base,
        DISCORD_GATEWAY_URL=sandbox.gateway_url,
        SHARD_COUNT="1",
    )
    proc = await run_bot(tmp_path, env)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "SHARD_COUNT" in lines[0], lines
    assert [c.close_code for c in sandbox.connections] == [4011]
