"""ENOSPC injected at each write point of new work, after the space check has passed (the disk
filled up meanwhile): the member gets the same clear refusal, and nothing is left half-written."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.i18n import t
from bot.services.characters import files as character_files
from bot.store import jobs as job_store
from discord_sandbox import DiscordSandbox
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, World

pytestmark = pytest.mark.e2e
FULL = t("storage.full", "en")


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


async def count(harness: BotHarness, table: str) -> int:
    assert harness.bot is not None
    row = await harness.bot.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


async def test_the_job_row_cannot_be_written(sandbox: DiscordSandbox, world: World, harness: BotHarness) -> None:
    await harness.start()

    async def full(*args: Any, **kwargs: Any) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.MonkeyPatch.context() as patch:  # not the harness's: it holds discord.py's endpoints
        patch.setattr(job_store, "insert", full)
        handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a fox")
        assert (await handle.wait_final_message(timeout=10)).content == FULL
        assert await count(harness, "jobs") == 0
        assert await count(harness, "ledger") == 0
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a fox")
    assert "Job #" in (await handle.wait_final_message(timeout=10)).content


async def test_the_clip_cannot_be_stored(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bot = await harness.start()
    clip = make_clip(tmp_path / "clip.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()

    def full(*args: Any) -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(character_files, "_put", full)
    video = sandbox.add_attachment(clip, "clip.mp4", "video/mp4")
    who = world.member
    handle = await sandbox.invoke(world.guild, world.channel, who, "character create", name="Mira", video=video)
    assert (await handle.wait_final_message(timeout=20)).content == FULL
    assert await count(harness, "characters") == 0
    data = bot.settings.data_dir
    assert files_under(data / "clips") == [] and files_under(data / "tmp") == []  # the upload was discarded
