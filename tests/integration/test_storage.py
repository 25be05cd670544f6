"""The storage janitor against a real database and real files: retention by age and by size
(oldest first), characters' files, what it must never touch, and the record of each deletion."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from bot.config import Settings
from bot.db import Database
from bot.services.actors import Actor
from bot.services.characters import CharacterService
from bot.services.characters.errors import VideoNotKept
from bot.services.guilds import GuildService
from bot.services.storage import StorageService
from tests.storage_world import NOW, Files


def janitor(db: Database, data: Path, *, max_bytes: int = 10**12, days: float = 14) -> StorageService:
    return StorageService(db, data, retention_days=days, max_bytes=max_bytes, clock=lambda: NOW)


@pytest.fixture
def files(db: Database, tmp_path: Path) -> Files:
    return Files(tmp_path / "data", db)


async def purged(db: Database, job_id: int) -> bool:
    row = await db.fetchone("SELECT result_purged_at FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return row[0] is not None


async def test_videos_past_the_retention_go_with_their_fitted_copy(db: Database, files: Files) -> None:
    old = await files.job(finished_days_ago=20, fit=True)
    recent = await files.job(finished_days_ago=2)
    owed = await files.job(state="succeeded", finished_days_ago=None)  # not yet posted
    report = await janitor(db, files.data).sweep()
    assert report.videos == 1
    assert report.freed_bytes == 1000 + 100
    assert not files.videos[old].exists() and not files.fit_copy(old).exists()
    assert files.videos[recent].exists() and files.videos[owed].exists()
    assert await purged(db, old) and not await purged(db, recent) and not await purged(db, owed)
    # a second pass finds nothing more to do
    assert (await janitor(db, files.data).sweep()).videos == 0


async def test_over_the_size_cap_the_oldest_videos_go_first(db: Database, files: Files) -> None:
    cap = Settings(data_max_gb="0.05").data_max_bytes
    assert cap == 50_000_000
    mb20 = 20_000_000
    oldest = await files.job(finished_days_ago=5, size=mb20)
    older = await files.job(finished_days_ago=4, size=mb20)
    newer = await files.job(finished_days_ago=3, size=mb20)
    newest = await files.job(finished_days_ago=1, size=mb20)
    running = await files.job(state="running", finished_days_ago=None, video=False)
    report = await janitor(db, files.data, max_bytes=cap).sweep()
    assert report.videos == 2
    assert report.used_bytes <= cap
    assert not files.videos[oldest].exists() and not files.videos[older].exists()
    assert files.videos[newer].exists() and files.videos[newest].exists()
    assert await purged(db, oldest) and await purged(db, older)
    assert not await purged(db, running)


async def test_over_the_cap_a_video_still_owed_is_kept(db: Database, files: Files) -> None:
    owed = await files.job(state="succeeded", finished_days_ago=None, size=80_000_000)
    report = await janitor(db, files.data, max_bytes=50_000_000).sweep()
    assert report.videos == 0
    assert files.videos[owed].exists()


async def test_characters_files_live_kept_deleted_after_retention(db: Database, files: Files) -> None:
    live = await files.character(sha="a" * 64)
    gone = await files.character(deleted_days_ago=20, sha="b" * 64)
    recent = await files.character(deleted_days_ago=2, sha="c" * 64)
    twin = await files.character(deleted_days_ago=20, sha="a" * 64)  # shares the live one's clip
    in_use = await files.character(deleted_days_ago=20, sha="d" * 64)
    await files.job(state="held", finished_days_ago=None, video=False, characters=[in_use])
    report = await janitor(db, files.data).sweep()
    assert report.characters == 2  # gone, and twin's own frames
    assert not any(p.exists() for p in files.character_files(gone)) and not files.clip("b" * 64).exists()
    assert not (files.data / "frames" / str(gone)).exists()
    assert not any(p.exists() for p in files.character_files(twin))
    assert files.clip("a" * 64).exists()  # the live character still uses it
    for kept, sha in ((live, "a"), (recent, "c"), (in_use, "d")):
        assert all(p.exists() for p in files.character_files(kept))
        assert files.clip(sha * 64).exists()


async def test_extract_says_the_video_is_no_longer_kept(db: Database, files: Files, tmp_path: Path) -> None:
    job = await files.job(finished_days_ago=20)
    await janitor(db, files.data).sweep()
    settings = Settings(data_dir=files.data)
    async with httpx.AsyncClient() as http:
        service = CharacterService(db, settings, {}, GuildService(db), http)
        actor = Actor(user_id=3, guild_id=1)
        with pytest.raises(VideoNotKept):
            await service.check_finished_job(actor, job)
        with pytest.raises(VideoNotKept):
            await service.create_from_job(actor, job_id=job, name="Nova")
        assert await service.finished_jobs(actor) == []  # no longer offered


async def test_work_a_crash_left_in_tmp_goes_after_a_day(db: Database, files: Files) -> None:
    tmp = files.data / "tmp"
    stale = tmp / "frames-dead" / "ref_0.jpg"
    fresh = tmp / "upload-live"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 50)
    fresh.write_bytes(b"y" * 70)
    day_old = NOW - 2 * 86400
    os.utime(stale, (day_old, day_old))
    os.utime(stale.parent, (day_old, day_old))
    for path in (fresh, tmp):
        os.utime(path, (NOW, NOW))
    report = await janitor(db, files.data).sweep()
    assert report.freed_bytes == 50
    assert not stale.parent.exists()
    assert fresh.exists()
