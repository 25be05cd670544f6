"""Which write failures mean "no space" (refused with storage.full) and which are bugs (raised)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from bot.db import Database
from bot.services.storage import StorageFull, StorageService, is_disk_full, refused_when_full


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_an_os_error_for_lack_of_space_or_rights_is_a_refusal(code: int) -> None:
    with pytest.raises(StorageFull), refused_when_full():
        raise OSError(code, "nope")


def test_sqlite_disk_full_is_a_refusal() -> None:
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    with pytest.raises(StorageFull), refused_when_full():
        raise sqlite3.OperationalError("database or disk is full")


def test_other_errors_pass_through() -> None:
    with pytest.raises(sqlite3.OperationalError), refused_when_full():
        raise sqlite3.OperationalError("no such table: jobs")
    with pytest.raises(FileNotFoundError), refused_when_full():
        raise FileNotFoundError(errno.ENOENT, "gone")


async def test_an_unwritable_data_dir_refuses_new_work(db: Database, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where DATA_DIR should be")
    storage = StorageService(db, blocker / "data", retention_days=14, max_bytes=10**9)
    with pytest.raises(StorageFull):
        await storage.require_space()
    blocker.unlink()  # the operator fixes it: accepted again, no restart
    await storage.require_space()


async def test_the_janitor_runs_at_most_once_per_interval(db: Database, tmp_path: Path) -> None:
    now = [1000.0]
    storage = StorageService(
        db, tmp_path / "data", retention_days=14, max_bytes=10**9, clock=lambda: now[0], sweep_interval=600
    )
    first = await storage.maybe_sweep()
    assert first is not None
    await first  # in the background: the delivery loop never waits for it
    now[0] += 599
    assert await storage.maybe_sweep() is None
    now[0] += 2
    second = await storage.maybe_sweep()
    assert second is not None
    await storage.close()
