"""Jobs and characters with real files on disk, for the storage janitor's tests (rows written
directly: the janitor only reads what the rest of Castbot has already recorded)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.db import Database
from bot.services.storage import DAY

NOW = 1000 * DAY


@dataclass
class Files:
    data: Path
    db: Database
    videos: dict[int, Path] = field(default_factory=dict)  # job id -> its video

    def fit_copy(self, job_id: int) -> Path:
        video = self.videos[job_id]
        return video.with_name(video.name.removesuffix(".mp4") + ".fit.mp4")

    async def job(
        self,
        *,
        state: str = "delivered",
        finished_days_ago: float | None = 30,
        size: int = 1000,
        characters: Sequence[int] = (),
        video: bool = True,
        fit: bool = False,
    ) -> int:
        """A job; `finished_days_ago` None: not yet notified. `video`: it has a result file."""
        request = {
            "seconds": 4,
            "orientation": "landscape",
            "quality": "standard",
            "characters": [{"id": c, "key": f"c{c}", "name": f"c{c}"} for c in characters],
            "requested_provider": None,
        }
        notified = None if finished_days_ago is None else NOW - finished_days_ago * DAY
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO jobs (guild_id, channel_id, user_id, prompt, request_json, providers, provider, state, "
                "estimate_micros, global_period, guild_period, member_period, created_at, updated_at, notified_at) "
                "VALUES (1, 2, 3, 'p', ?, 'local', 'local', ?, 0, '2026-01', '2026-01', '2026-01-01', ?, ?, ?)"
                " RETURNING id",
                (json.dumps(request), state, NOW - 40 * DAY, NOW - 40 * DAY, notified),
            )
            row = await cursor.fetchone()
            assert row is not None
            job_id = int(row[0])
            if video:
                path = self.data / "videos" / f"job-{job_id}.mp4"
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as f:
                    f.truncate(size)  # sparse: sizes of many MB cost nothing
                if fit:
                    path.with_name(f"job-{job_id}.fit.mp4").write_bytes(b"f" * 100)
                self.videos[job_id] = path
                await conn.execute("UPDATE jobs SET result_path = ? WHERE id = ?", (str(path), job_id))
        return job_id

    async def character(
        self, *, deleted_days_ago: float | None = None, sha: str | None = None, name: str | None = None
    ) -> int:
        """A character with its clip (clips/<sha>.mp4), two frames and a preview."""
        async with self.db.transaction() as conn:
            cursor = await conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM characters")
            row = await cursor.fetchone()
            assert row is not None
            next_id = int(row[0])
            sha = sha or f"{next_id:064x}"
            clip = f"clips/{sha}.mp4"
            frames = [f"frames/{next_id}/ref_0.jpg", f"frames/{next_id}/ref_1.jpg"]
            deleted = None if deleted_days_ago is None else NOW - deleted_days_ago * DAY
            label = name or f"c{next_id}"
            cursor = await conn.execute(
                "INSERT INTO characters (id, guild_id, owner_id, name, name_key, name_skeleton, clip_sha256, "
                "clip_path, "
                "clip_duration, frame_paths, created_at, updated_at, deleted_at) "
                "VALUES (?, 1, 3, ?, ?, ?, ?, ?, 5.0, ?, ?, ?, ?)",
                (next_id, label, label, f"{label}#{next_id}", sha, clip, json.dumps(frames), NOW - 60 * DAY,
                 NOW - 60 * DAY, deleted),
            )  # fmt: skip
        for relative in (clip, *frames, f"frames/{next_id}/preview.webp"):
            path = self.data / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 10)
        return next_id

    def character_files(self, character_id: int, sha: str | None = None) -> list[Path]:
        folder = self.data / "frames" / str(character_id)
        return [folder / "ref_0.jpg", folder / "ref_1.jpg", folder / "preview.webp"]

    def clip(self, sha: str) -> Path:
        return self.data / "clips" / f"{sha}.mp4"
