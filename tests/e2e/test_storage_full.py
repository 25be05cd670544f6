"""A full disk, for real: DATA_DIR (or its videos folder) on a small tmpfs that a filler file fills
to ENOSPC, or a read-only file system over it. New jobs and characters are refused with a clear
message, a job in flight keeps its hold and is delivered once space returns, and nothing in the
ledger is half-written.

Mounting needs root with CAP_SYS_ADMIN (CI runs as root on the same machine kind); elsewhere these
tests are skipped with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Castbot
from bot.i18n import t
from discord_sandbox import DiscordSandbox
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, World

pytestmark = pytest.mark.e2e
FULL = t("storage.full", "en")


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    """`path` as a tmpfs of `size`, unmounted afterwards; skips the test where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a real full disk needs `mount -t tmpfs` (root, CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros into `folder` until its file system says ENOSPC; the filler file."""
    filler = folder / "filler.bin"
    chunk = b"\0" * (256 * 1024)
    with pytest.raises(OSError) as full, open(filler, "wb", buffering=0) as f:
        while True:
            f.write(chunk)
    assert full.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as again, open(folder / "probe.bin", "wb", buffering=0) as f:
        f.write(chunk)
    assert again.value.errno == errno.ENOSPC
    (folder / "probe.bin").unlink(missing_ok=True)
    return filler


async def row(bot: Castbot, sql: str, *params: Any) -> Any:
    return await bot.db.fetchone(sql, params)


async def wait_state(bot: Castbot, job_id: int, state: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await row(bot, "SELECT state FROM jobs WHERE id = ?", job_id)
        if found is not None and found["state"] == state:
            return
        await asyncio.sleep(0.05)
    found = await row(bot, "SELECT state, error FROM jobs WHERE id = ?", job_id)
    raise AssertionError(f"job {job_id} never reached {state}: {dict(found) if found else None}")


async def test_a_full_disk_refuses_new_work_and_recovers_by_itself(
    sandbox: DiscordSandbox, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()
    with small_disk(tmp_path / "disk") as disk:
        harness = BotHarness(sandbox=sandbox, data_dir=disk / "data", monkeypatch=monkeypatch)
        try:
            bot = await harness.start()
            filler = fill(disk)

            generate = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a fox")
            assert FULL in (await generate.wait_final_message(timeout=20)).content
            video = sandbox.add_attachment(clip, "clip.mp4", "video/mp4")
            create = await sandbox.invoke(
                world.guild, world.channel, world.member, "character create", name="Mira", video=video
            )
            assert FULL in (await create.wait_final_message(timeout=20)).content
            assert (await row(bot, "SELECT COUNT(*) AS n FROM jobs"))["n"] == 0
            assert (await row(bot, "SELECT COUNT(*) AS n FROM characters"))["n"] == 0
            assert (await row(bot, "SELECT COUNT(*) AS n FROM ledger"))["n"] == 0

            filler.unlink()  # space returns: no restart, no command
            generate = await sandbox.invoke(
                world.guild, world.channel, world.member, "generate", prompt="a fox", seconds=2
            )
            assert "Job #1 is queued" in (await generate.wait_final_message(timeout=20)).content
            await wait_state(bot, 1, "delivered")
            kinds = [r["kind"] for r in await bot.db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
            assert kinds == ["hold", "release"]
            assert await bot.services.budget.audit() == []  # every counter agrees with the ledger
        finally:
            await sandbox.wait_answered()
            await harness.stop()


async def test_a_job_in_flight_keeps_its_hold_while_its_video_cannot_be_stored(
    sandbox: DiscordSandbox, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    with small_disk(data / "videos", size="2m") as videos:
        harness = BotHarness(sandbox=sandbox, data_dir=data, monkeypatch=monkeypatch)
        try:
            bot = await harness.start()
            filler = fill(videos)
            generate = await sandbox.invoke(
                world.guild, world.channel, world.member, "generate", prompt="a fox", seconds=2
            )
            assert "Job #1 is queued" in (await generate.wait_final_message(timeout=20)).content
            await asyncio.sleep(3)  # rendered long ago (0.2 s); every download since hit ENOSPC
            job = await row(bot, "SELECT state, result_path FROM jobs WHERE id = 1")
            assert job["state"] in ("queued", "running")
            assert job["result_path"] is None
            kinds = [r["kind"] for r in await bot.db.fetchall("SELECT kind FROM ledger WHERE job_id = 1")]
            assert kinds == ["hold"]  # kept, neither captured nor released
            assert [p.name for p in videos.iterdir()] == ["filler.bin"]  # no half-written video left

            filler.unlink()
            await wait_state(bot, 1, "delivered")
            kinds = [r["kind"] for r in await bot.db.fetchall("SELECT kind FROM ledger WHERE job_id = 1 ORDER BY id")]
            assert kinds == ["hold", "release"]
            assert await bot.services.budget.audit() == []
            assert (videos / "job-1.mp4").is_file()
        finally:
            await sandbox.wait_answered()
            await harness.stop()


async def test_an_unwritable_data_dir_refuses_new_work_until_writable_again(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    bot = await harness.start()
    data = bot.settings.data_dir
    # a read-only file system mounted over DATA_DIR: nothing new can be created there
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(data)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only DATA_DIR needs `mount` (root, CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}")
    try:
        generate = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a fox")
        assert FULL in (await generate.wait_final_message(timeout=20)).content
    finally:
        subprocess.run(["umount", "-l", str(data)], check=True)
    assert (await row(bot, "SELECT COUNT(*) AS n FROM jobs"))["n"] == 0
    generate = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a fox", seconds=2)
    assert "Job #1 is queued" in (await generate.wait_final_message(timeout=20)).content
    await wait_state(bot, 1, "delivered")
