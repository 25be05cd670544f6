"""What the storage janitor may delete, what it must keep, and the record of what it deleted.

Files on disk are referenced from two tables:
- jobs.result_path: a finished video (absolute, or relative to the working directory);
- characters.clip_path and frame_paths: relative to DATA_DIR; a clip is content-addressed and
  shared by every character made from the same bytes.

A video may go once its job is finished and its final message was posted (`notified_at`); a
character's files once it is soft-deleted. Whatever an open job or a live character refers to
is *protected*: `protected_paths` is the one place that rule is written, and the janitor checks
every deletion against it. A clip and frames that /character edit replaced are recorded in
`character_retired_files` and may go once no open job names their character (`retired_files`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from bot.db import Connection, Database, dialect
from bot.domain.job_state import OPEN, ordered

Source: TypeAlias = "Database | Connection"
_OPEN = ordered(OPEN)  # jobs still needing their characters' files or their own video


@dataclass(frozen=True)
class KeptVideo:
    job_id: int
    result_path: str
    finished_at: float  # when the member was given the video (notified_at)
    provider: str | None = None
    external_id: str | None = None  # the provider's id of the job


@dataclass(frozen=True)
class DeletedCharacterFiles:
    character_id: int
    clip_sha256: str
    clip_path: str
    frame_paths: tuple[str, ...]
    deleted_at: float


@dataclass(frozen=True)
class Protected:
    videos: frozenset[str]  # result_path values of jobs whose video is still owed
    character_files: frozenset[str]  # clip and frame paths (relative to DATA_DIR) still in use
    characters: frozenset[int]  # live characters, and those an open job refers to


def _named_by_jobs(source: Source) -> str:
    """A subquery's start: the character ids jobs' requests name (the caller adds `WHERE jobs.…`)."""
    if dialect(source) == "postgresql":
        return (
            "SELECT CAST(c ->> 'id' AS BIGINT) FROM jobs,"
            " jsonb_array_elements(CAST(jobs.request_json AS jsonb) -> 'characters') c"
        )
    return "SELECT json_extract(c.value, '$.id') FROM jobs, json_each(jobs.request_json, '$.characters') c"


async def _all(source: Source, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    if isinstance(source, Database):
        return await source.fetchall(sql, params)
    rows = await source.execute_fetchall(sql, params)
    return list(rows)


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


async def deletable_videos(source: Source, *, finished_before: float | None = None) -> list[KeptVideo]:
    """Kept videos of finished, notified jobs, oldest first (those finished before the cutoff)."""
    cutoff = "AND notified_at < ?" if finished_before is not None else ""
    params: list[Any] = list(_OPEN)
    if finished_before is not None:
        params.append(finished_before)
    rows = await _all(
        source,
        "SELECT id, result_path, notified_at, provider, external_id FROM jobs WHERE result_path IS NOT NULL "
        f"AND result_purged_at IS NULL AND notified_at IS NOT NULL AND state NOT IN ({_marks(_OPEN)}) {cutoff} "
        "ORDER BY notified_at, id",
        params,
    )
    return [
        KeptVideo(
            job_id=r["id"],
            result_path=r["result_path"],
            finished_at=r["notified_at"],
            provider=r["provider"],
            external_id=r["external_id"],
        )
        for r in rows
    ]


async def deleted_characters(source: Source, *, deleted_before: float | None = None) -> list[DeletedCharacterFiles]:
    """Soft-deleted characters whose files are still on disk, longest deleted first."""
    cutoff = "AND deleted_at < ?" if deleted_before is not None else ""
    params = [deleted_before] if deleted_before is not None else []
    rows = await _all(
        source,
        "SELECT id, clip_sha256, clip_path, frame_paths, deleted_at FROM characters "
        f"WHERE deleted_at IS NOT NULL AND files_purged_at IS NULL {cutoff} ORDER BY deleted_at, id",
        params,
    )
    return [
        DeletedCharacterFiles(
            character_id=r["id"],
            clip_sha256=r["clip_sha256"],
            clip_path=r["clip_path"],
            frame_paths=tuple(json.loads(r["frame_paths"])),
            deleted_at=r["deleted_at"],
        )
        for r in rows
    ]


async def protected_paths(source: Source) -> Protected:
    """Every file a job in progress or a live character needs.

    Videos: of every job not yet finished and notified (its video is still to be posted).
    Character files: of every live character, and of every character (deleted or not) an open
    job refers to in its request (held, sending, rendering, expired: it may still be sent).
    """
    videos = await _all(
        source,
        "SELECT result_path FROM jobs WHERE result_path IS NOT NULL AND result_purged_at IS NULL "
        f"AND (notified_at IS NULL OR state IN ({_marks(_OPEN)}))",
        _OPEN,
    )
    referred = _named_by_jobs(source)
    characters = await _all(
        source,
        "SELECT id, clip_path, frame_paths FROM characters WHERE deleted_at IS NULL "
        f"OR id IN ({referred} WHERE jobs.state IN ({_marks(_OPEN)}))",
        _OPEN,
    )
    files: set[str] = set()
    for row in characters:
        files.add(row["clip_path"])
        files.update(json.loads(row["frame_paths"]))
    return Protected(
        videos=frozenset(r["result_path"] for r in videos),
        character_files=frozenset(files),
        characters=frozenset(r["id"] for r in characters),
    )


async def mark_videos_deleted(conn: Connection, job_ids: Sequence[int], now: float) -> None:
    await conn.executemany(
        "UPDATE jobs SET result_purged_at = ? WHERE id = ? AND result_purged_at IS NULL",
        [(now, job_id) for job_id in job_ids],
    )


async def clip_used_by_live(source: Source, clip_path: str) -> bool:
    """A live character uses this clip (one made from the same bytes after the snapshot)."""
    sql = "SELECT 1 FROM characters WHERE clip_path = ? AND deleted_at IS NULL LIMIT 1"
    rows = await _all(source, sql, (clip_path,))
    return bool(rows)


async def mark_character_files_deleted(conn: Connection, character_id: int, now: float) -> None:
    await conn.execute(
        "UPDATE characters SET files_purged_at = ? WHERE id = ? AND files_purged_at IS NULL", (now, character_id)
    )


async def video_deleted(source: Source, job_id: int) -> bool:
    """The janitor deleted this job's video."""
    rows = await _all(source, "SELECT 1 FROM jobs WHERE id = ? AND result_purged_at IS NOT NULL", (job_id,))
    return bool(rows)


@dataclass(frozen=True)
class RetiredFiles:
    id: int
    character_id: int
    clip_sha256: str
    clip_path: str
    frame_paths: tuple[str, ...]


async def retired_files(source: Source) -> list[RetiredFiles]:
    """Files /character edit replaced, not yet deleted, whose character no open job names (a job
    sent before the edit may still read them), oldest first."""
    rows = await _all(
        source,
        "SELECT id, character_id, clip_sha256, clip_path, frame_paths FROM character_retired_files "
        f"WHERE purged_at IS NULL AND character_id NOT IN ({_named_by_jobs(source)} "
        f"WHERE jobs.state IN ({_marks(_OPEN)})) "
        "ORDER BY retired_at, id",
        _OPEN,
    )
    return [
        RetiredFiles(
            id=r["id"],
            character_id=r["character_id"],
            clip_sha256=r["clip_sha256"],
            clip_path=r["clip_path"],
            frame_paths=tuple(json.loads(r["frame_paths"])),
        )
        for r in rows
    ]


async def mark_retired_deleted(conn: Connection, retired_id: int, now: float) -> None:
    await conn.execute("UPDATE character_retired_files SET purged_at = ? WHERE id = ?", (now, retired_id))
