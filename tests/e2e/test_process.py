"""`python -m bot` as a real process: configuration errors and a clean SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from discord_sandbox import DiscordSandbox
from tests.conftest import SANDBOX_TOKEN

REPO = Path(__file__).resolve().parents[2]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN")) and k != "PROVIDERS"}
    env.update({"DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}, **extra)
    return env


async def run_bot(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,  # no stray .env from the developer's checkout
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_missing_token_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    proc = await run_bot(tmp_path, clean_env(tmp_path))
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "DISCORD_TOKEN" in lines[0]
    assert "Traceback" not in stderr.decode() + stdout.decode()


async def test_sigterm_shuts_down_cleanly_within_ten_seconds(tmp_path: Path, sandbox: DiscordSandbox) -> None:
    guild = sandbox.add_guild("Castle")
    env = clean_env(
        tmp_path,
        DISCORD_TOKEN=SANDBOX_TOKEN,
        DISCORD_API_BASE=sandbox.api_base,
        DISCORD_GATEWAY_URL=sandbox.gateway_url,
        COMMAND_GUILD_ID=str(guild.id),
    )
    proc = await run_bot(tmp_path, env)
    try:
        await sandbox.wait_ready(timeout=30)
        assert [c["name"] for c in sandbox.synced_commands(guild)] != []
        database = tmp_path / "data" / "castbot.sqlite3"
        assert database.exists()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 15)
        elapsed = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert elapsed < 10
    await sandbox.wait_disconnected(timeout=5)
    # SQLite removes the WAL file when the last connection closes cleanly
    assert not (tmp_path / "data" / "castbot.sqlite3-wal").exists()
    log = stdout.decode()
    assert "shutting down" in log
    assert SANDBOX_TOKEN not in log + stderr.decode()
