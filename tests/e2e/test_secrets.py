"""Keys as they come from files and careless copies (a newline, a space, a tab at either end or
inside), against the real bot process at LOG_LEVEL=DEBUG: trimmed keys work and never appear on
stdout or stderr, whole or in part; a key broken inside stops the start with one line naming it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from discord_sandbox import MANAGE_GUILD, DiscordSandbox
from tests.conftest import SANDBOX_TOKEN, Simulators
from tests.e2e.test_crash_recovery import prepare_guild_budget
from tests.fakes.openai_sim import OpenAISim

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-proj-Secret0penaiKeyValue0123456789"
FAL_KEY = "fal-key-id:fal-key-Secret0123456789abcdef"
SECRET_VARS = ("DISCORD_TOKEN", "OPENAI_API_KEY", "RELAY_API_KEY", "KLING_API_KEY", "GEMINI_API_KEY", "FAL_KEY")


@pytest.fixture
async def sim(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=OPENAI_KEY, job_seconds=0.2, poll_after_ms=100))


def env_of(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS and not k.endswith("_API_KEY")}
    env.update(PYTHONPATH=str(REPO), DATA_DIR=str(tmp_path / "data"), LOG_LEVEL="DEBUG", **extra)
    return env


async def run_bot(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def pieces(secret: str, size: int = 12) -> list[str]:
    """Every run of `size` characters of the secret: none may show, escaped or not."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "FAL_KEY", "DISCORD_TOKEN", "KLING_API_KEY"])
@pytest.mark.parametrize("inside", [" ", "\t", "\n", "\x07", "\u200b"])
async def test_a_key_broken_inside_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, variable: str, inside: str
) -> None:
    value = f"Secret0123456789{inside}abcdefghijkl"
    env = env_of(tmp_path, **{"DISCORD_TOKEN": SANDBOX_TOKEN, variable: value})
    proc = await run_bot(tmp_path, env)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert variable in lines[0]
    output = stdout.decode() + stderr.decode()
    assert "Secret0123456789" not in output and "abcdefghijkl" not in output


@pytest.mark.parametrize("around", [("\n", ""), ("", "\n"), (" ", "\r\n"), ("\t", "\t"), (" \n", " ")])
async def test_keys_with_whitespace_around_work_and_never_reach_a_log_at_debug(
    tmp_path: Path, sandbox: DiscordSandbox, sim: OpenAISim, around: tuple[str, str]
) -> None:
    before, after = around
    guild = sandbox.add_guild("Castle")
    channel = guild.add_text_channel("general")
    admin = guild.add_member("ada", permissions=MANAGE_GUILD)
    member = guild.add_member("bob")
    await prepare_guild_budget(tmp_path / "data", guild.id, admin.id)
    env = env_of(
        tmp_path,
        DISCORD_TOKEN=f"{before}{SANDBOX_TOKEN}{after}",
        DISCORD_API_BASE=sandbox.api_base,
        DISCORD_GATEWAY_URL=sandbox.gateway_url,
        COMMAND_GUILD_ID=str(guild.id),
        PROVIDERS="openai",
        OPENAI_API_KEY=f"{before}{OPENAI_KEY}{after}",
        OPENAI_BASE_URL=sim.base_url,
        FAL_KEY=f"{before}{FAL_KEY}{after}",
        POLL_MIN_SECONDS="0.05",
        POLL_MAX_SECONDS="0.3",
    )
    proc = await run_bot(tmp_path, env)
    try:
        await sandbox.wait_ready(timeout=30)
        handle = await sandbox.invoke(guild, channel, member, "generate", prompt="a lantern in fog", seconds=4)
        assert "Job #1 is queued" in (await handle.wait_final_message(timeout=15)).content
        await sandbox.wait_for(lambda: len(sim.creates()) == 1, 15, "the job to reach the provider with the key")
        await sandbox.wait_for(
            lambda: any("job #1" in m.content and m.attachments for m in channel.visible_messages), 30, "the video"
        )
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = stdout.decode() + stderr.decode()
    assert "DEBUG" in output  # the level that used to leak
    assert SANDBOX_TOKEN not in output
    for secret in (OPENAI_KEY, FAL_KEY):
        leaked = [p for p in pieces(secret) if p in output]
        assert leaked == [], leaked[:3]
