"""The operator's HTTP endpoint (bot/web/server.py) on the real bot against the Discord sandbox:
/healthz follows the gateway and the database, /metrics parses and moves after a /generate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import Castbot
from bot.db import SqliteDatabase
from discord_sandbox import DiscordSandbox
from discord_sandbox.clips import make_clip
from tests.conftest import SANDBOX_TOKEN, BotHarness, World
from tests.e2e.test_generate import create_character, wait_result, wait_row
from tests.e2e.test_process import clean_env, run_bot

pytestmark = pytest.mark.e2e

HTTP = {"http_host": "127.0.0.1", "http_port": 0}
ROOT = Path(__file__).resolve().parents[2]


async def get(bot: Castbot, path: str) -> httpx.Response:
    assert bot.http_url is not None
    async with httpx.AsyncClient(base_url=bot.http_url, timeout=10) as client:
        return await client.get(path)


async def wait_health(bot: Castbot, status: int, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            response = await get(bot, "/healthz")
            if response.status_code == status:
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@contextlib.asynccontextmanager
async def locked(bot: Castbot) -> AsyncIterator[None]:
    """Another connection holds a write transaction on the bot's database file."""
    assert isinstance(bot.db, SqliteDatabase)
    other = await aiosqlite.connect(str(bot.db.path), isolation_level=None)
    try:
        await other.execute("BEGIN IMMEDIATE")
        yield
        await other.execute("ROLLBACK")
    finally:
        await other.close()


async def test_the_endpoint_is_off_unless_http_port_is_set(world: World, castbot: Castbot) -> None:
    assert castbot.settings.http_port is None
    assert castbot.http_url is None


async def test_healthz_is_503_while_the_gateway_is_down_and_200_once_it_resumes(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await harness.start(**HTTP)
    body = await wait_health(bot, 200)
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True

    # the sandbox drops the socket and holds the bot's RESUME / IDENTIFY until released
    released = asyncio.Event()
    gateway = sandbox.gateway
    resume, identify = gateway._resume, gateway._identify

    async def held_resume(connection: Any, data: Any) -> bool:
        await released.wait()
        return await resume(connection, data)

    async def held_identify(connection: Any, data: Any) -> bool:
        await released.wait()
        return await identify(connection, data)

    monkeypatch.setattr(gateway, "_resume", held_resume)
    monkeypatch.setattr(gateway, "_identify", held_identify)
    await sandbox.drop_connections()
    body = await wait_health(bot, 503)
    assert body["failed"] == ["gateway"]
    assert body["checks"]["gateway"]["ok"] is False

    released.set()
    body = await wait_health(bot, 200)
    assert body["failed"] == []


async def test_healthz_is_503_quickly_while_the_database_is_locked(world: World, harness: BotHarness) -> None:
    bot = await harness.start(**HTTP)
    await wait_health(bot, 200)
    async with locked(bot):
        started = asyncio.get_running_loop().time()
        response = await get(bot, "/healthz")
        elapsed = asyncio.get_running_loop().time() - started
        assert response.status_code == 503
        body = response.json()
        assert body["failed"] == ["database"]
        assert "locked" in body["checks"]["database"]["detail"]
        assert elapsed < 3  # a short busy timeout of its own, not the writer's 5 s
    await wait_health(bot, 200)


async def test_metrics_parse_and_move_after_a_generate(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, tmp_path: Path
) -> None:
    bot = await harness.start(**HTTP)
    before = await get(bot, "/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    first = samples(before.text)
    assert first[("castbot_provider_breaker_state", (("provider", "local"), ("state", "closed")))] == 1
    assert ("castbot_provider_submits_total", (("outcome", "accepted"), ("provider", "local"))) not in first

    clip = make_clip(tmp_path / "mira.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()
    await create_character(sandbox, world, "Mira", clip)
    # Discord answers one channel post 429: discord.py waits it out, retries and logs it
    sandbox.fail_next("POST", r"/channels/\d+/messages$", 429, retry_after=0.05)
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="@Mira waves", seconds=4)
    await handle.wait_final_message(timeout=10)
    await wait_result(sandbox, world, 1)
    await wait_row(bot, "SELECT 1 FROM jobs WHERE id = 1 AND state = 'delivered'")

    after = samples((await get(bot, "/metrics")).text)
    assert after[("castbot_provider_submits_total", (("outcome", "accepted"), ("provider", "local")))] == 1
    assert after[("castbot_provider_status_requests_total", (("outcome", "ok"), ("provider", "local")))] >= 1
    assert after[("castbot_jobs", (("provider", "local"), ("state", "delivered")))] == 1
    assert after[("castbot_delivery_lag_seconds_count", ())] == 1
    assert after[("castbot_db_write_seconds_count", ())] > first[("castbot_db_write_seconds_count", ())]
    assert ("castbot_money_micro_usd_total", (("kind", "release"),)) in after  # local is free: zero amounts
    assert after[("castbot_tracking_last_pass_timestamp_seconds", ())] > 0
    assert after[("castbot_encodes_waiting", ())] == 0
    assert after[("castbot_discord_rate_limited_total", (("outcome", "retried"),))] == 1
    # no member, guild or job id is ever a label
    labels = {name for (_, pairs) in after for name, _ in pairs}
    assert labels <= {"provider", "state", "outcome", "kind", "le"}


async def docker_healthcheck(port: int | None) -> int:
    """The Dockerfile's HEALTHCHECK command, run as Docker would: its exit code."""
    line = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", (ROOT / "Dockerfile").read_text())
    assert line is not None
    argv = json.loads(line.group(1))
    assert argv[0] == "python"
    env = {k: v for k, v in os.environ.items() if k != "HTTP_PORT"}
    if port is not None:
        env["HTTP_PORT"] = str(port)
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv[1:], env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


async def test_the_images_healthcheck_follows_healthz(world: World, harness: BotHarness) -> None:
    bot = await harness.start(**HTTP)
    await wait_health(bot, 200)
    assert bot.http_url is not None
    port = int(bot.http_url.rsplit(":", 1)[1])
    assert await docker_healthcheck(port) == 0
    async with locked(bot):
        assert await docker_healthcheck(port) == 1
    assert await docker_healthcheck(None) == 0  # no HTTP_PORT: nothing to ask


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_python_m_bot_serves_healthz_and_closes_it_on_sigterm(tmp_path: Path, sandbox: DiscordSandbox) -> None:
    guild = sandbox.add_guild("Castle")
    port = free_port()
    env = clean_env(
        tmp_path,
        DISCORD_TOKEN=SANDBOX_TOKEN,
        DISCORD_API_BASE=sandbox.api_base,
        DISCORD_GATEWAY_URL=sandbox.gateway_url,
        COMMAND_GUILD_ID=str(guild.id),
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        POLL_MAX_SECONDS="1",
    )
    proc = await run_bot(tmp_path, env)
    try:
        await sandbox.wait_ready(timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            async with asyncio.timeout(15):
                while (response := await client.get("/healthz")).status_code != 200:
                    await asyncio.sleep(0.1)
            assert response.json()["status"] == "ok"
            assert "castbot_jobs" in (await client.get("/metrics")).text
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
        elapsed = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert elapsed < 10
    with pytest.raises(httpx.ConnectError):  # the port is closed with the bot
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"http://127.0.0.1:{port}/healthz")
    assert not (tmp_path / "data" / "castbot.sqlite3-wal").exists()
