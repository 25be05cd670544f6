"""A character's files under DATA_DIR: the clip at clips/<sha256>.<ext> (one copy per content,
shared by every character made from it), its reference frames at frames/<id>/ref_N.jpg and its
animated preview beside them at frames/<id>/preview.webp (.gif without libwebp): everything under
frames/<id>/ lives as long as the character.

Media work (probe, frame extraction) is CPU-bound and runs in worker threads. Nothing here knows
about the database; the service decides what to keep. Work in progress lives in DATA_DIR/tmp and
is removed whatever happens, so a refused upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bot import media
from bot.media import preview
from bot.services.characters.errors import ClipRefused, UploadRefused

log = logging.getLogger(__name__)

REFERENCE_FRAMES = 4
BEST_WINDOW_SECONDS = 4.0  # the longest window a provider wants (openai: 2-4 s; relay: 1-3 s)
_CLIP_EXTENSIONS = {"mp4", "mov", "webm", "mkv", "avi", "3gp"}
_MB = 1024 * 1024


@dataclass(frozen=True)
class StoredClip:
    relative: str  # clips/<sha256>.<ext>
    sha256: str
    duration: float
    created: bool  # False when the same bytes were already stored


@dataclass(frozen=True)
class Frames:
    folder: Path  # a temporary folder holding ref_N.jpg, moved into place by `place_frames`
    names: tuple[str, ...]  # ref_0.jpg (frontal) first
    best_window_start: float


class KeyedLocks:
    """One holder per key at a time; a key's lock lives only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


class CharacterFiles:
    def __init__(self, data_dir: Path, http: httpx.AsyncClient, max_bytes: int) -> None:
        self.data = data_dir
        self._http = http
        self.max_bytes = max_bytes
        # Held from storing a clip until its character row exists (or the clip is discarded), so a
        # failed create never deletes a clip another create of the same bytes is about to use.
        self.clip_locks = KeyedLocks()
        self.preview_locks = KeyedLocks()  # one preview made at a time per character

    def path(self, relative: str) -> Path:
        """A stored path (relative to DATA_DIR, so the data folder can move) made absolute."""
        path = Path(relative)
        return path if path.is_absolute() else self.data / path

    def temporary(self, prefix: str) -> Path:
        return self.data / "tmp" / f"{prefix}-{secrets.token_hex(8)}"

    def too_large(self, size: int) -> UploadRefused:
        return UploadRefused("characters.upload.too_large", size=f"{size / _MB:.1f}", limit=self.max_bytes // _MB)

    async def download(self, url: str, dest: Path) -> str:
        """Stream an attachment into `dest` with the byte cap; its SHA-256."""
        try:
            _size, sha = await media.download_capped(self._http, url, dest, self.max_bytes)
        except media.DownloadTooLarge as exc:
            raise self.too_large(exc.seen) from None
        except httpx.HTTPError as exc:
            log.info("downloading a character clip failed: %s", type(exc).__name__)
            raise UploadRefused("characters.upload.download_failed") from None
        return sha

    async def store_clip(self, source: Path, sha: str, *, owned: bool) -> StoredClip:
        """Probe `source` and put it at its content address (moved if `owned`, else copied)."""
        try:
            info = await asyncio.to_thread(media.probe_clip, source, max_bytes=self.max_bytes)
        except media.ClipRejected as exc:
            raise ClipRefused(exc.problem.value, exc.detail) from None
        ext = info.container if info.container in _CLIP_EXTENSIONS else "mp4"
        relative = f"clips/{sha}.{ext}"
        created = await asyncio.to_thread(_put, source, self.data / relative, owned)
        return StoredClip(relative, sha, info.duration, created)

    async def discard_clip(self, clip: StoredClip) -> None:
        """Remove a clip no character uses (the caller checked, holding the clip's lock)."""
        await asyncio.to_thread((self.data / clip.relative).unlink, True)

    async def frames(self, clip: StoredClip, twins: Sequence[tuple[Sequence[str], float]]) -> Frames:
        """Reference frames and the best window for `clip`: copied from a character made from the
        same bytes (`twins`: its frame paths and window) when those files still exist, else extracted."""
        folder = self.temporary("frames")
        try:
            for paths, window in twins:
                sources = [self.path(p) for p in paths]
                copied: bool = bool(sources) and await asyncio.to_thread(_copy_all, sources, folder)
                if copied:
                    return Frames(folder, tuple(p.name for p in sources), window)
            source = self.data / clip.relative
            written = await asyncio.to_thread(media.extract_reference_frames, source, folder, count=REFERENCE_FRAMES)
            window = await asyncio.to_thread(media.best_window, source, BEST_WINDOW_SECONDS)
        except media.ClipRejected as exc:
            await self.discard_frames(folder)
            raise ClipRefused(exc.problem.value, exc.detail) from None
        except BaseException:
            await self.discard_frames(folder)
            raise
        return Frames(folder, tuple(p.name for p in written), window)

    async def place_frames(self, frames: Frames, character_id: int) -> list[str]:
        """Move the frames to frames/<character id>/; their stored (relative) paths."""
        # a failed earlier attempt may have left a folder under the same (reused) id
        await asyncio.to_thread(_move_dir, frames.folder, self.data / "frames" / str(character_id))
        return [f"frames/{character_id}/{name}" for name in frames.names]

    def preview_path(self, character_id: int) -> Path:
        """Where the character's animated preview is (or will be): beside its frames."""
        return self.data / "frames" / str(character_id) / f"preview{preview.PREVIEW_SUFFIX}"

    async def ensure_preview(self, character_id: int, clip: str, window_start: float, duration: float) -> Path | None:
        """The character's preview, made from its clip's best window if missing; None when it
        cannot be made (an unreadable clip, too large): a character works without one."""
        dest = self.preview_path(character_id)
        async with self.preview_locks.hold(character_id):
            if await asyncio.to_thread(dest.is_file):
                return dest
            # the middle of the best window, kept inside the clip
            middle = window_start + max(0.0, BEST_WINDOW_SECONDS - preview.PREVIEW_SECONDS) / 2
            start = max(0.0, min(middle, duration - preview.PREVIEW_SECONDS))
            try:
                made = await asyncio.to_thread(preview.make_preview, self.path(clip), dest, start)
            except (media.ClipRejected, preview.PreviewTooLarge, OSError) as exc:
                log.warning("no preview for character %s: %s", character_id, exc)
                return None
            log.info("preview for character %s: %d bytes, %d frames", character_id, made.bytes, made.frames)
            return dest

    async def discard_frames(self, folder: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def discard(self, path: Path) -> None:
        await asyncio.to_thread(path.unlink, True)


# --- in worker threads ----------------------------------------------------------------------------


def _put(source: Path, dest: Path, owned: bool) -> bool:
    """True if this call created `dest`; an existing file holds the same bytes (same hash)."""
    if dest.is_file():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    if owned:
        os.replace(source, dest)
        return True
    part = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        shutil.copyfile(source, part)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return True


def _copy_all(sources: Sequence[Path], folder: Path) -> bool:
    if not all(p.is_file() for p in sources):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for path in sources:
        shutil.copyfile(path, folder / path.name)
    return True


def _move_dir(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
