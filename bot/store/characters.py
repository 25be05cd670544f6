"""characters, character_imports and character_handles rows.

A guild's character *namespace* is the union of its live characters' `name_key`s and its imports'
`alias_key`s; the service keeps the two disjoint inside one write transaction. Reads that decide
what a member may see or use are written here once, with the visibility rule in SQL:

    own guild:  deleted_at IS NULL AND (visibility != 'private' OR owner_id = :user)
    imports:    the imported character is live and public

Queries take either the Database (reads on the reader connection) or the connection of an open
write transaction (so a check and the write that depends on it see the same state).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from bot.db import Connection, Database, dialect
from bot.domain.job_state import MADE, ordered
from bot.prompts import name_skeleton
from bot.store.rows import mapped

Source: TypeAlias = "Database | Connection"
Params = Sequence[Any] | dict[str, Any]
FINISHED_JOB_STATES = ordered(MADE)  # jobs whose video exists
_NAMES = 0x0CA6  # pg_advisory_xact_lock's first key: name claims, per guild (the second key)
_TOP = "\U0010ffff"  # sorts after every other code point (bytes, or PostgreSQL's "C" collation): "starts with ?"


@dataclass(frozen=True)
class CharacterRow:
    id: int
    guild_id: int
    owner_id: int
    name: str
    name_key: str
    description: str
    visibility: str
    share_code: str | None
    clip_sha256: str
    clip_path: str  # relative to DATA_DIR
    clip_duration: float
    best_window_start: float
    frame_paths: tuple[str, ...]  # relative to DATA_DIR; [0] is the frontal frame
    source_job_id: int | None
    uses: int
    created_at: float
    updated_at: float
    deleted_at: float | None
    last_used_at: float | None


@dataclass(frozen=True)
class ImportRow:
    id: int
    guild_id: int
    character_id: int
    alias: str
    alias_key: str
    imported_by: int
    created_at: float


@dataclass(frozen=True)
class Listed:
    """One line of a listing: a character, and the import that brings it here (if any)."""

    character: CharacterRow
    via: ImportRow | None = None


@dataclass(frozen=True)
class HandleRow:
    character_id: int
    provider: str
    state: str  # ready | refused
    external_id: str | None
    mention_token: str | None
    error: str | None
    expires_at: float | None = None


@dataclass(frozen=True)
class NameHit:
    """An autocomplete candidate."""

    name: str
    key: str
    kind: str  # own | import
    visibility: str
    recent: float


@dataclass(frozen=True)
class FinishedJob:
    id: int
    prompt: str
    result_path: str
    created_at: float
    result_purged_at: float | None  # the storage janitor deleted the video


_CHARACTER_FIELDS = (
    "id", "guild_id", "owner_id", "name", "name_key", "description", "visibility", "share_code", "clip_sha256",
    "clip_path", "clip_duration", "best_window_start", "frame_paths", "source_job_id", "uses", "created_at",
    "updated_at", "deleted_at", "last_used_at",
)  # fmt: skip
_CHARACTER_COLUMNS = ", ".join(_CHARACTER_FIELDS)
_IMPORT_FIELDS = ("id", "guild_id", "character_id", "alias", "alias_key", "imported_by", "created_at")
# an import's columns carry an `i_` prefix: a row may hold a character and its import side by side
_IMPORT_COLUMNS = ", ".join(f"i.{c} AS i_{c}" for c in _IMPORT_FIELDS)
_NO_IMPORT = ", ".join(f"NULL AS i_{c}" for c in _IMPORT_FIELDS)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c} AS {c}" for c in _CHARACTER_FIELDS)


def _character(row: Any) -> CharacterRow:
    return mapped(CharacterRow, row, frame_paths=tuple(str(p) for p in json.loads(row["frame_paths"])))


def _import(row: Any) -> ImportRow:
    return mapped(ImportRow, row, prefix="i_")


def _position(source: Source) -> str:
    """Where a substring starts (1-based, 0 when absent): the function's name differs by engine."""
    return "strpos" if dialect(source) == "postgresql" else "instr"


async def _all(source: Source, sql: str, params: Params = ()) -> list[Any]:
    if isinstance(source, Database):
        return await source.fetchall(sql, params)
    async with source.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def _one(source: Source, sql: str, params: Params = ()) -> Any:
    if isinstance(source, Database):
        return await source.fetchone(sql, params)
    async with source.execute(sql, params) as cursor:
        return await cursor.fetchone()


# --- characters -----------------------------------------------------------------------------------


async def insert_character(
    conn: Connection,
    *,
    guild_id: int,
    owner_id: int,
    name: str,
    name_key: str,
    description: str,
    visibility: str,
    clip_sha256: str,
    name_skeleton: str,
    clip_path: str,
    clip_duration: float,
    best_window_start: float,
    source_job_id: int | None,
    now: float,
) -> int:
    cursor = await conn.execute(
        "INSERT INTO characters (guild_id, owner_id, name, name_key, description, visibility, clip_sha256, "
        "clip_path, clip_duration, best_window_start, frame_paths, source_job_id, created_at, updated_at, "
        "name_skeleton) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?, ?, ?) RETURNING id",
        (
            guild_id,
            owner_id,
            name,
            name_key,
            description,
            visibility,
            clip_sha256,
            clip_path,
            clip_duration,
            best_window_start,
            source_job_id,
            now,
            now,
            name_skeleton,
        ),
    )
    row = await cursor.fetchone()
    await cursor.close()
    assert row is not None
    return int(row[0])


async def set_frame_paths(conn: Connection, character_id: int, paths: Sequence[str]) -> None:
    await conn.execute("UPDATE characters SET frame_paths = ? WHERE id = ?", (json.dumps(list(paths)), character_id))


async def get(source: Source, character_id: int) -> CharacterRow | None:
    row = await _one(source, f"SELECT {_CHARACTER_COLUMNS} FROM characters WHERE id = ?", (character_id,))
    return None if row is None else _character(row)


async def live_by_key(source: Source, guild_id: int, key: str) -> CharacterRow | None:
    """The guild's own live character with this name, or else the one it looks like (the same
    confusable skeleton), whatever its visibility."""
    row = await _one(
        source,
        f"SELECT {_CHARACTER_COLUMNS} FROM characters WHERE guild_id = ? AND (name_key = ? OR name_skeleton = ?) "
        "AND deleted_at IS NULL ORDER BY name_key = ? DESC LIMIT 1",
        (guild_id, key, name_skeleton(key), key),
    )
    return None if row is None else _character(row)


async def deleted_by_key(source: Source, guild_id: int, key: str, user_id: int) -> CharacterRow | None:
    """The most recently deleted character of this name the member could have used."""
    row = await _one(
        source,
        f"SELECT {_CHARACTER_COLUMNS} FROM characters WHERE guild_id = ? AND (name_key = ? OR name_skeleton = ?) "
        "AND deleted_at IS NOT NULL AND (visibility != 'private' OR owner_id = ?) "
        "ORDER BY name_key = ? DESC, deleted_at DESC LIMIT 1",
        (guild_id, key, name_skeleton(key), user_id, key),
    )
    return None if row is None else _character(row)


async def by_share_code(source: Source, code: str) -> CharacterRow | None:
    row = await _one(source, f"SELECT {_CHARACTER_COLUMNS} FROM characters WHERE share_code = ?", (code,))
    return None if row is None else _character(row)


async def clip_in_use(source: Source, sha256: str) -> bool:
    return await _one(source, "SELECT 1 FROM characters WHERE clip_sha256 = ? LIMIT 1", (sha256,)) is not None


async def with_same_clip(source: Source, sha256: str) -> list[CharacterRow]:
    """Characters made from the same clip, newest first (their frames can be reused)."""
    rows = await _all(
        source,
        f"SELECT {_CHARACTER_COLUMNS} FROM characters WHERE clip_sha256 = ? ORDER BY id DESC LIMIT 5",
        (sha256,),
    )
    return [_character(r) for r in rows]


async def set_visibility(
    conn: Connection, character_id: int, visibility: str, share_code: str | None, now: float
) -> None:
    """A share code, once issued, is never replaced (COALESCE keeps the first one)."""
    await conn.execute(
        "UPDATE characters SET visibility = ?, share_code = COALESCE(share_code, ?), updated_at = ? WHERE id = ?",
        (visibility, share_code, now, character_id),
    )


async def soft_delete(conn: Connection, character_id: int, now: float) -> bool:
    cursor = await conn.execute(
        "UPDATE characters SET deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
        (now, now, character_id),
    )
    changed = cursor.rowcount
    await cursor.close()
    return changed == 1


async def add_uses(db: Database, character_ids: Iterable[int], now: float) -> None:
    ids = sorted(set(character_ids))
    if not ids:
        return
    marks = ", ".join("?" for _ in ids)
    await db.execute(
        f"UPDATE characters SET uses = uses + 1, last_used_at = ? WHERE id IN ({marks})",
        (now, *ids),
    )


# --- imports --------------------------------------------------------------------------------------


async def import_by_key(source: Source, guild_id: int, key: str) -> Listed | None:
    row = await _one(
        source,
        f"SELECT {_columns('c')}, {_IMPORT_COLUMNS} FROM character_imports i "
        "JOIN characters c ON c.id = i.character_id WHERE i.guild_id = ? AND (i.alias_key = ? OR i.alias_skeleton = ?) "
        "ORDER BY i.alias_key = ? DESC LIMIT 1",
        (guild_id, key, name_skeleton(key), key),
    )
    return None if row is None else Listed(_character(row), _import(row))


async def import_of(source: Source, guild_id: int, character_id: int) -> ImportRow | None:
    row = await _one(
        source,
        f"SELECT {_IMPORT_COLUMNS} FROM character_imports i WHERE i.guild_id = ? AND i.character_id = ?",
        (guild_id, character_id),
    )
    return None if row is None else _import(row)


async def count_imports(source: Source, character_id: int) -> int:
    row = await _one(source, "SELECT COUNT(*) FROM character_imports WHERE character_id = ?", (character_id,))
    return int(row[0]) if row else 0


async def insert_import(
    conn: Connection, *, guild_id: int, character_id: int, alias: str, alias_key: str, by: int, now: float
) -> int:
    cursor = await conn.execute(
        "INSERT INTO character_imports (guild_id, character_id, alias, alias_key, imported_by, created_at, "
        "alias_skeleton) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (guild_id, character_id, alias, alias_key, by, now, name_skeleton(alias)),
    )
    row = await cursor.fetchone()
    await cursor.close()
    assert row is not None
    return int(row[0])


async def delete_import(conn: Connection, import_id: int) -> None:
    await conn.execute("DELETE FROM character_imports WHERE id = ?", (import_id,))


# --- the namespace --------------------------------------------------------------------------------


async def name_holder(conn: Connection, guild_id: int, key: str) -> str | None:
    """The name (a character's, or an import's alias) holding this name or one that looks like it
    in the guild, else None.

    An import of a deleted character can never work again, so it does not hold its alias: it is
    removed here, inside the caller's transaction, when someone claims the name.

    On PostgreSQL, claims of names in one guild take turns until commit (several processes), so
    the check and the caller's insert cannot interleave with another claim's.
    """
    if dialect(conn) == "postgresql":
        await conn.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (_NAMES, str(guild_id)))
    own = await live_by_key(conn, guild_id, key)
    if own is not None:
        return own.name
    found = await import_by_key(conn, guild_id, key)
    if found is None or found.via is None:
        return None
    if found.character.deleted_at is not None:
        await delete_import(conn, found.via.id)
        return None
    return found.via.alias


async def skeletons_with_prefix(source: Source, guild_id: int, prefix: str) -> set[str]:
    """Every taken name skeleton of the guild that starts with `prefix` (for suggesting a free name)."""
    rows = await _all(
        source,
        "SELECT name_skeleton FROM characters WHERE guild_id = ? AND deleted_at IS NULL "
        "AND name_skeleton >= ? AND name_skeleton < ? "
        "UNION SELECT alias_skeleton FROM character_imports WHERE guild_id = ? "
        "AND alias_skeleton >= ? AND alias_skeleton < ?",
        (guild_id, prefix, prefix + _TOP, guild_id, prefix, prefix + _TOP),
    )
    return {str(r[0]) for r in rows}


async def usable_names(source: Source, guild_id: int, user_id: int, limit: int = 5000) -> list[str]:
    """Names a member may use here (for "did you mean"), most recently active first."""
    rows = await _all(
        source,
        "SELECT name, COALESCE(last_used_at, created_at) AS recent FROM characters "
        "WHERE guild_id = ? AND deleted_at IS NULL AND (visibility != 'private' OR owner_id = ?) "
        "UNION ALL SELECT i.alias, COALESCE(c.last_used_at, i.created_at) FROM character_imports i "
        "JOIN characters c ON c.id = i.character_id "
        "WHERE i.guild_id = ? AND c.deleted_at IS NULL AND c.visibility = 'public' "
        "ORDER BY recent DESC LIMIT ?",
        (guild_id, user_id, guild_id, limit),
    )
    return [str(r[0]) for r in rows]


# --- autocomplete ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """Which names an autocomplete offers. `others_private`: moderators deleting; `imports`:
    'usable' (live and public), 'all' (also revoked/deleted ones, to remove them), 'mine', 'none'."""

    owner_only: bool = False
    others_private: bool = False
    imports: str = "usable"


async def complete(
    source: Source, guild_id: int, user_id: int, prefix: str, reach: Reach, *, contains: bool, limit: int
) -> list[NameHit]:
    """Names matching `prefix` (a name_key), most recent first. With `contains`, names that have it
    anywhere but at the start. Both use the (guild_id, name_key) indexes: a prefix is a range scan."""
    own_where = ["guild_id = ?", "deleted_at IS NULL"]
    own_params: list[Any] = [guild_id]
    if contains:
        own_where.append(f"{_position(source)}(name_key, ?) > 1")
        own_params.append(prefix)
    else:
        own_where.append("name_key >= ? AND name_key < ?")
        own_params += [prefix, prefix + _TOP]
    if reach.owner_only:
        own_where.append("owner_id = ?")
        own_params.append(user_id)
    elif not reach.others_private:
        own_where.append("(visibility != 'private' OR owner_id = ?)")
        own_params.append(user_id)
    rows = await _all(
        source,
        "SELECT name, name_key AS key, visibility, COALESCE(last_used_at, created_at) AS recent FROM characters "
        f"WHERE {' AND '.join(own_where)} ORDER BY recent DESC, id DESC LIMIT ?",
        (*own_params, limit),
    )
    hits = [mapped(NameHit, r, kind="own") for r in rows]
    if reach.imports == "none":
        return hits
    imp_where = ["i.guild_id = ?"]
    imp_params: list[Any] = [guild_id]
    if contains:
        imp_where.append(f"{_position(source)}(i.alias_key, ?) > 1")
        imp_params.append(prefix)
    else:
        imp_where.append("i.alias_key >= ? AND i.alias_key < ?")
        imp_params += [prefix, prefix + _TOP]
    if reach.imports == "usable":
        imp_where.append("c.deleted_at IS NULL AND c.visibility = 'public'")
    elif reach.imports == "mine":
        imp_where.append("i.imported_by = ?")
        imp_params.append(user_id)
    rows = await _all(
        source,
        "SELECT i.alias AS name, i.alias_key AS key, "
        "CASE WHEN c.deleted_at IS NULL THEN c.visibility ELSE 'deleted' END AS visibility, "
        "COALESCE(c.last_used_at, i.created_at) AS recent FROM character_imports i "
        f"JOIN characters c ON c.id = i.character_id WHERE {' AND '.join(imp_where)} "
        "ORDER BY recent DESC, i.id DESC LIMIT ?",
        (*imp_params, limit),
    )
    hits += [mapped(NameHit, r, kind="import") for r in rows]
    hits.sort(key=lambda h: -h.recent)
    return hits[:limit]


# --- listings -------------------------------------------------------------------------------------

_SERVER_UNION = (
    f"SELECT {_CHARACTER_COLUMNS}, {_NO_IMPORT}, name_key AS sort_key FROM characters "
    "WHERE guild_id = :guild AND deleted_at IS NULL AND (visibility != 'private' OR owner_id = :user) "
    f"UNION ALL SELECT {_columns('c')}, {_IMPORT_COLUMNS}, i.alias_key FROM character_imports i "
    "JOIN characters c ON c.id = i.character_id WHERE i.guild_id = :guild"
)


async def list_server(source: Source, guild_id: int, user_id: int, limit: int, offset: int) -> list[Listed]:
    """What a member sees in a guild: its visible characters and every import (alphabetical)."""
    rows = await _all(
        source,
        f"SELECT * FROM ({_SERVER_UNION}) AS listed ORDER BY sort_key LIMIT :limit OFFSET :offset",
        {"guild": guild_id, "user": user_id, "limit": limit, "offset": offset},
    )
    return [Listed(_character(r), _import(r) if r["i_id"] is not None else None) for r in rows]


async def count_server(source: Source, guild_id: int, user_id: int) -> int:
    row = await _one(
        source,
        f"SELECT COUNT(*) FROM ({_SERVER_UNION}) AS listed",
        {"guild": guild_id, "user": user_id},
    )
    return int(row[0]) if row else 0


async def list_mine(source: Source, guild_id: int, user_id: int, limit: int, offset: int) -> list[Listed]:
    rows = await _all(
        source,
        f"SELECT {_CHARACTER_COLUMNS} FROM characters WHERE guild_id = ? AND owner_id = ? AND deleted_at IS NULL "
        "ORDER BY name_key LIMIT ? OFFSET ?",
        (guild_id, user_id, limit, offset),
    )
    return [Listed(_character(r)) for r in rows]


async def count_mine(source: Source, guild_id: int, user_id: int) -> int:
    row = await _one(
        source,
        "SELECT COUNT(*) FROM characters WHERE guild_id = ? AND owner_id = ? AND deleted_at IS NULL",
        (guild_id, user_id),
    )
    return int(row[0]) if row else 0


# hidden after enough reports (pending review) or taken down by an operator: off public listings
_LISTABLE = "AND hidden_at IS NULL AND taken_down_at IS NULL"


async def list_community(source: Source, limit: int, offset: int) -> list[Listed]:
    """Public characters of every guild, most used first."""
    rows = await _all(
        source,
        f"SELECT {_CHARACTER_COLUMNS} FROM characters WHERE visibility = 'public' AND deleted_at IS NULL "
        f"{_LISTABLE} ORDER BY uses DESC, created_at DESC, id DESC LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return [Listed(_character(r)) for r in rows]


async def count_community(source: Source) -> int:
    row = await _one(
        source, f"SELECT COUNT(*) FROM characters WHERE visibility = 'public' AND deleted_at IS NULL {_LISTABLE}"
    )
    return int(row[0]) if row else 0


# --- provider handles -----------------------------------------------------------------------------


async def handles(source: Source, character_ids: Sequence[int]) -> list[HandleRow]:
    ids = sorted(set(character_ids))
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    rows = await _all(
        source,
        "SELECT character_id, provider, state, external_id, mention_token, error, expires_at FROM character_handles "
        f"WHERE character_id IN ({marks})",
        ids,
    )
    return [mapped(HandleRow, r) for r in rows]


async def put_handle(
    db: Database,
    character_id: int,
    provider: str,
    *,
    state: str,
    external_id: str | None,
    mention_token: str | None,
    error: str | None,
    now: float,
    expires_at: float | None = None,
) -> None:
    await db.execute(
        "INSERT INTO character_handles "
        "(character_id, provider, state, external_id, mention_token, error, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (character_id, provider) DO UPDATE SET state = excluded.state, "
        "external_id = excluded.external_id, mention_token = excluded.mention_token, error = excluded.error, "
        "created_at = excluded.created_at, expires_at = excluded.expires_at",
        (character_id, provider, state, external_id, mention_token, error, now, expires_at),
    )


# --- finished jobs (for /character extract) -------------------------------------------------------


async def finished_jobs(source: Source, guild_id: int, user_id: int, limit: int) -> list[FinishedJob]:
    marks = ", ".join("?" for _ in FINISHED_JOB_STATES)
    rows = await _all(
        source,
        "SELECT id, prompt, result_path, created_at, result_purged_at FROM jobs WHERE guild_id = ? "
        f"AND user_id = ? AND state IN ({marks}) AND result_path IS NOT NULL AND result_purged_at IS NULL "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        (guild_id, user_id, *FINISHED_JOB_STATES, limit),
    )
    return [mapped(FinishedJob, r) for r in rows]


async def finished_job(source: Source, guild_id: int, user_id: int, job_id: int) -> FinishedJob | None:
    marks = ", ".join("?" for _ in FINISHED_JOB_STATES)
    row = await _one(
        source,
        "SELECT id, prompt, result_path, created_at, result_purged_at FROM jobs "
        "WHERE id = ? AND guild_id = ? AND user_id = ? "
        f"AND state IN ({marks}) AND result_path IS NOT NULL",
        (job_id, guild_id, user_id, *FINISHED_JOB_STATES),
    )
    return None if row is None else mapped(FinishedJob, row)
