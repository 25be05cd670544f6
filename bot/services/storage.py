"""Storage that never fills the disk: the janitor, the space check before new work, the usage.

The janitor (`sweep`, run by the delivery loop through `maybe_sweep`) deletes
- finished videos (the job's `result_path`, its `<stem>.fit.mp4` copy and, for the offline
  `local` provider, its render under local-renders/) once the member has been given them and
  they are older than VIDEO_RETENTION_DAYS, then the oldest first while DATA_DIR is larger than
  DATA_MAX_GB;
- the clip (unless another character shares it) and frames of soft-deleted characters, after the
  same retention, and the oldest deleted first when videos alone cannot bring DATA_DIR under;
- the clip and frames /character edit replaced, at the first pass when no open job names the
  character any more.
Live characters' files are never deleted, nor anything a job in progress refers to: every
deletion is checked against `bot.store.storage.protected_paths` (read once a pass: see `_sweep`)
and never leaves DATA_DIR. Each deletion is recorded (`result_purged_at`, `files_purged_at`) after
the files are gone, so a crash between the two leaves at worst a record the next pass completes.

A full disk (ENOSPC) or an unwritable DATA_DIR: `require_space` refuses new jobs and characters
with a clear message, checked by writing a small file each time, so the refusal ends by itself
as soon as space returns. Jobs already admitted keep their holds: a failed download or write in
the tracker is an `Unavailable` / a logged exception, and the job is simply looked at later.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.db import Database
from bot.errors import UserFacingError
from bot.services.encoding import fitted_path
from bot.store import storage as store

log = logging.getLogger(__name__)

GB = 1_000_000_000  # DATA_MAX_GB is decimal gigabytes
DAY = 86400.0
SWEEP_INTERVAL_SECONDS = 600.0  # how often the delivery loop runs the janitor
# Work in progress (DATA_DIR/tmp: an upload being probed, frames being made) lasts minutes; what a
# crash left there is removed after a day.
STALE_TMP_SECONDS = DAY
# New work needs room for a video or a clip: below this much free space (or a twentieth of a
# smaller disk) it is refused.
DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024
_PROBE_BYTES = 4096
RECORD_BATCH = 256  # deleted videos recorded a transaction
_LOCAL_ID = re.compile(r"loc_[0-9a-f]{16}")  # the local provider's job ids (never a path)


class StorageFull(UserFacingError):
    """New work refused: DATA_DIR is full or cannot be written."""

    def __init__(self) -> None:
        super().__init__("storage.full")


class KeyLocks(Protocol):
    """The character service's per-clip locks (bot/services/characters/files.py KeyedLocks)."""

    def hold(self, key: Hashable) -> AbstractAsyncContextManager[None]: ...


class _NoLocks:
    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        yield


@dataclass(frozen=True)
class StorageUsage:
    used_bytes: int  # everything under DATA_DIR, the database included
    limit_bytes: int  # DATA_MAX_GB
    videos_bytes: int  # finished videos (DATA_DIR/videos)
    free_bytes: int | None  # left on the file system; None when it cannot be read


@dataclass(frozen=True)
class SweepReport:
    videos: int = 0  # jobs whose video was deleted
    characters: int = 0  # deleted characters whose files were removed
    freed_bytes: int = 0
    used_bytes: int = 0  # DATA_DIR after the sweep


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for lack of space or permission (OS or SQLite), not for a bug."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "disk is full" in text or "readonly" in text or "disk i/o error" in text
    return False


@contextlib.contextmanager
def refused_when_full() -> Iterator[None]:
    """Around a write of new work: a full or unwritable disk becomes StorageFull (SQLite has
    rolled the transaction back, so nothing is half-written)."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        if is_disk_full(exc):
            log.warning("refusing new work: a write failed (%s)", exc)
            raise StorageFull() from exc
        raise


class StorageService:
    def __init__(
        self,
        db: Database,
        data_dir: Path,
        *,
        retention_days: float,
        max_bytes: int,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        clip_locks: KeyLocks | None = None,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self._db = db
        self.data_dir = data_dir
        self._retention = retention_days * DAY
        self._max_bytes = max_bytes
        self._reserve = reserve_bytes
        self._locks: KeyLocks = clip_locks or _NoLocks()
        self._clock = clock
        self._interval = sweep_interval
        self._last_sweep: float | None = None
        self._sweeping = asyncio.Lock()
        self._deleted_videos: list[int] = []  # deleted, not yet recorded
        self._task: asyncio.Task[SweepReport] | None = None

    def use_clip_locks(self, locks: KeyLocks) -> None:
        """Share the character service's per-clip locks: a clip is never deleted while a new
        character made from the same bytes is being stored."""
        self._locks = locks

    # --- the space check --------------------------------------------------------------------------

    async def require_space(self) -> None:
        """StorageFull unless DATA_DIR can be written and keeps the reserve free."""
        problem = await asyncio.to_thread(_probe, self.data_dir, self._reserve)
        if problem is not None:
            log.warning("refusing new work: DATA_DIR %s %s", self.data_dir, problem)
            raise StorageFull()

    # --- usage ------------------------------------------------------------------------------------

    async def usage(self) -> StorageUsage:
        used = await asyncio.to_thread(_tree_size, self.data_dir)
        videos = await asyncio.to_thread(_tree_size, self.data_dir / "videos")
        free: int | None
        try:
            free = (await asyncio.to_thread(shutil.disk_usage, self.data_dir)).free
        except OSError:
            free = None
        return StorageUsage(used_bytes=used, limit_bytes=self._max_bytes, videos_bytes=videos, free_bytes=free)

    # --- the janitor ------------------------------------------------------------------------------

    async def maybe_sweep(self) -> asyncio.Task[SweepReport] | None:
        """Start a sweep in the background when the last one began more than the interval ago (the
        delivery loop calls this every pass and never waits for the files to be deleted)."""
        now = self._clock()
        if self._last_sweep is not None and now - self._last_sweep < self._interval:
            return None
        if self._task is not None and not self._task.done():
            return None
        self._last_sweep = now
        self._task = asyncio.create_task(self._logged_sweep(), name="storage-janitor")
        return self._task

    async def _logged_sweep(self) -> SweepReport:
        try:
            return await self.sweep()
        except Exception:
            log.exception("storage janitor pass failed; the next one retries")
            raise

    async def close(self) -> None:
        """Stop a sweep in progress (what it deleted is recorded, or recorded by the next one)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def sweep(self) -> SweepReport:
        async with self._sweeping:
            return await self._sweep()

    async def _sweep(self) -> SweepReport:
        now = self._clock()
        cutoff = now - self._retention
        videos = characters = freed = 0
        # One look at what is protected serves the pass: a finished, notified job never moves
        # again, and a deleted character is never taken up by a new job (only live ones can be),
        # so what is protected only shrinks meanwhile; the one exception, a new character made
        # from the same clip, is checked under the clip's lock.
        protected = await store.protected_paths(self._db)
        for video in await store.deletable_videos(self._db, finished_before=cutoff):
            size = await self._delete_video(video, protected)
            if size is not None:
                videos, freed = videos + 1, freed + size
        await self._record_deleted_videos()
        for character in await store.deleted_characters(self._db, deleted_before=cutoff):
            size = await self._delete_character_files(character, protected)
            if size is not None:
                characters, freed = characters + 1, freed + size
        for retired in await store.retired_files(self._db):
            freed += await self._delete_retired_files(retired, protected) or 0
        freed += await asyncio.to_thread(_remove_stale, self.data_dir / "tmp", now - STALE_TMP_SECONDS)
        used = await asyncio.to_thread(_tree_size, self.data_dir)
        if used > self._max_bytes:
            for video in await store.deletable_videos(self._db):
                if used <= self._max_bytes:
                    break
                size = await self._delete_video(video, protected)
                if size is not None:
                    videos, freed, used = videos + 1, freed + size, used - size
            await self._record_deleted_videos()
            for character in await store.deleted_characters(self._db):
                if used <= self._max_bytes:
                    break
                size = await self._delete_character_files(character, protected)
                if size is not None:
                    characters, freed, used = characters + 1, freed + size, used - size
            if used > self._max_bytes:
                log.warning(
                    "DATA_DIR holds %d bytes, over DATA_MAX_GB (%d bytes), and nothing more may be deleted",
                    used,
                    self._max_bytes,
                )
        report = SweepReport(videos=videos, characters=characters, freed_bytes=freed, used_bytes=used)
        if videos or characters:
            log.info(
                "storage janitor freed %d bytes: %d videos, files of %d deleted characters; DATA_DIR now %d bytes",
                freed,
                videos,
                characters,
                used,
            )
        return report

    async def _delete_video(self, video: store.KeptVideo, protected: store.Protected) -> int | None:
        """The bytes freed, or None when the video is needed after all or could not be deleted."""
        if video.result_path in protected.videos:
            return None
        path = Path(video.result_path)
        files = [path, fitted_path(path)]
        if not all(self._inside(f) for f in files):
            log.warning("job %d: its video is outside DATA_DIR; not deleting it", video.job_id)
            return None
        render = self._local_render(video)
        if render is not None:
            files += await asyncio.to_thread(_files_in, render)
        size = await asyncio.to_thread(_remove_files, files)
        if size is None:
            return None
        if render is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(render.rmdir)
        self._deleted_videos.append(video.job_id)
        if len(self._deleted_videos) >= RECORD_BATCH:
            await self._record_deleted_videos()
        return size

    async def _record_deleted_videos(self) -> None:
        """Record deleted videos, a batch a transaction. A crash before this leaves them listed as
        kept: the next pass finds their files gone (nothing to free) and records them then."""
        done, self._deleted_videos = self._deleted_videos, []
        if done:
            async with self._db.transaction() as conn:
                await store.mark_videos_deleted(conn, done, self._clock())

    async def _delete_character_files(
        self, character: store.DeletedCharacterFiles, protected: store.Protected
    ) -> int | None:
        """Its frames folder (frames, preview) and its clip unless a live character shares it."""
        if character.character_id in protected.characters:
            return None  # a job in progress still uses it: a later sweep takes it
        async with self._locks.hold(character.clip_sha256):
            shared = await store.clip_used_by_live(self._db, character.clip_path)
            folder = self.data_dir / "frames" / str(character.character_id)
            listed = [
                p
                for p in (character.clip_path, *character.frame_paths)
                if p not in protected.character_files and not (shared and p == character.clip_path)
            ]
            files = [self._path(p) for p in listed]
            if not all(self._inside(f) for f in files):
                log.warning("character %d: a file is outside DATA_DIR; not deleting it", character.character_id)
                return None
            files += await asyncio.to_thread(_files_in, folder)
            size = await asyncio.to_thread(_remove_files, list(dict.fromkeys(files)))
            if size is None:
                return None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(folder.rmdir)  # only when empty
            async with self._db.transaction() as conn:
                await store.mark_character_files_deleted(conn, character.character_id, self._clock())
            return size

    async def _delete_retired_files(self, retired: store.RetiredFiles, protected: store.Protected) -> int | None:
        """The clip and frames /character edit replaced, once no open job names the character;
        never a file a live character uses now (the same clip, made again or edited back)."""
        async with self._locks.hold(retired.clip_sha256):
            shared = await store.clip_used_by_live(self._db, retired.clip_path)
            listed = [
                p
                for p in (retired.clip_path, *retired.frame_paths)
                if p not in protected.character_files and not (shared and p == retired.clip_path)
            ]
            files = [self._path(p) for p in listed]
            if not all(self._inside(f) for f in files):
                log.warning("character %d: a replaced file is outside DATA_DIR; not deleting it", retired.character_id)
                return None
            size = await asyncio.to_thread(_remove_files, files)
            if size is None:
                return None
            async with self._db.transaction() as conn:
                await store.mark_retired_deleted(conn, retired.id, self._clock())
            return size

    def _local_render(self, video: store.KeptVideo) -> Path | None:
        """The offline `local` provider's own copy of a finished job (DATA_DIR/local-renders/<id>/,
        bot/providers/registry.py), which it never needs again once the video was posted."""
        if video.provider != "local" or not video.external_id or not _LOCAL_ID.fullmatch(video.external_id):
            return None
        return self.data_dir / "local-renders" / video.external_id

    def _path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.data_dir / path

    def _inside(self, path: Path) -> bool:
        try:
            return path.resolve().is_relative_to(self.data_dir.resolve())
        except OSError:
            return False


# --- in worker threads ----------------------------------------------------------------------------


def _probe(data_dir: Path, reserve: int) -> str | None:
    """Why new work cannot be stored now, or None: writes, syncs and removes a small file."""
    probe = data_dir / f".space-probe-{secrets.token_hex(4)}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * _PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
        disk = shutil.disk_usage(data_dir)
    except OSError as exc:
        return f"cannot be written ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})"
    free, reserve = disk.free, min(reserve, disk.total // 20)  # a small disk keeps a twentieth
    if free < reserve:
        return f"has {free} bytes free, under the {reserve} kept in reserve"
    return None


def _tree_size(folder: Path) -> int:
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def _remove_stale(folder: Path, before: float) -> int:
    """Remove files under `folder` last changed before `before`, then the empty folders that were
    as old or held only such files; the bytes freed."""
    freed = 0
    emptied: set[Path] = set()
    for root, dirs, names in os.walk(folder, topdown=False):
        here = Path(root)
        for name in names:
            path = here / name
            try:
                info = path.lstat()
                if info.st_mtime < before:
                    path.unlink()
                    freed += info.st_size
                    emptied.add(here)
            except OSError:
                continue
        for name in dirs:
            path = here / name
            with contextlib.suppress(OSError):
                if path in emptied or path.lstat().st_mtime < before:
                    path.rmdir()  # only when empty
                    emptied.add(here)
    return freed


def _files_in(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def _remove_files(files: list[Path]) -> int | None:
    """The bytes removed; None when a file exists but could not be removed (nothing recorded)."""
    freed = 0
    for path in files:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not delete %s: %s", path, type(exc).__name__)
            return None
        freed += size
    return freed
