"""Trust around shared characters: reports, takedowns, the operators' audit, consents, and the
guild settings that go with them (migrations/0012_trust.sql).

`taken_down_at` and `hidden_at` live on `characters`; they are read and written here so the
character store keeps its shape. Queries take the Database (reads) or an open transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from bot.db import Connection, Database, dialect
from bot.store import guilds
from bot.store.rows import mapped

Source: TypeAlias = "Database | Connection"


@dataclass(frozen=True)
class Flags:
    character_id: int
    hidden_at: float | None
    taken_down_at: float | None


@dataclass(frozen=True)
class TrustSettings:
    allow_imports: bool = True
    report_channel_id: int | None = None
    require_consent: bool = False


@dataclass(frozen=True)
class OpenReport:
    """The open reports of one character, grouped."""

    character_id: int
    name: str
    share_code: str | None
    guild_id: int
    reporters: int
    reasons: tuple[str, ...]  # distinct, most frequent first
    latest: float
    hidden_at: float | None
    taken_down_at: float | None


@dataclass(frozen=True)
class JobCharacters:
    job_id: int
    guild_id: int
    user_id: int
    character_ids: tuple[int, ...]


@dataclass(frozen=True)
class Importer:
    guild_id: int
    aliases: int


async def _all(source: Source, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    if isinstance(source, Database):
        return await source.fetchall(sql, params)
    async with source.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def _one(source: Source, sql: str, params: Sequence[Any] = ()) -> Any:
    rows = await _all(source, sql, params)
    return rows[0] if rows else None


async def _changed(conn: Connection, sql: str, params: Sequence[Any]) -> int:
    cursor = await conn.execute(sql, params)
    count = cursor.rowcount
    await cursor.close()
    return count


# --- takedown and hiding --------------------------------------------------------------------------


async def flags(source: Source, character_ids: Sequence[int]) -> dict[int, Flags]:
    ids = sorted(set(character_ids))
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = await _all(
        source,
        f"SELECT id AS character_id, hidden_at, taken_down_at FROM characters WHERE id IN ({marks})",
        ids,
    )
    return {int(r["character_id"]): mapped(Flags, r) for r in rows}


async def set_taken_down(conn: Connection, character_id: int, at: float | None) -> bool:
    """Sets (a time) or clears (None) the takedown; True when it changed."""
    if at is None:
        sql = "UPDATE characters SET taken_down_at = NULL, hidden_at = NULL WHERE id = ? AND taken_down_at IS NOT NULL"
        return await _changed(conn, sql, (character_id,)) == 1
    sql = "UPDATE characters SET taken_down_at = ? WHERE id = ? AND taken_down_at IS NULL"
    return await _changed(conn, sql, (at, character_id)) == 1


async def unhide(conn: Connection, character_id: int) -> bool:
    sql = "UPDATE characters SET hidden_at = NULL WHERE id = ? AND hidden_at IS NOT NULL"
    return await _changed(conn, sql, (character_id,)) == 1


async def hide(conn: Connection, character_id: int, at: float) -> bool:
    sql = "UPDATE characters SET hidden_at = ? WHERE id = ? AND hidden_at IS NULL"
    return await _changed(conn, sql, (at, character_id)) == 1


async def audit(
    conn: Connection,
    *,
    operator_id: int,
    action: str,
    character_id: int | None,
    guild_id: int | None,
    detail: str,
    now: float,
) -> None:
    await conn.execute(
        "INSERT INTO operator_audit (operator_id, action, character_id, guild_id, detail, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (operator_id, action, character_id, guild_id, detail, now),
    )


# --- reports --------------------------------------------------------------------------------------


async def add_report(
    conn: Connection,
    *,
    character_id: int,
    reporter_id: int,
    guild_id: int | None,
    job_id: int | None,
    reason: str,
    now: float,
) -> bool:
    """False when this member already has an open or resolved report of the character."""
    sql = (
        "INSERT INTO character_reports (character_id, reporter_id, guild_id, job_id, reason, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (character_id, reporter_id) DO UPDATE SET "
        "reason = excluded.reason, created_at = excluded.created_at, resolved_at = NULL, job_id = excluded.job_id "
        "WHERE character_reports.resolved_at IS NOT NULL"
    )
    return await _changed(conn, sql, (character_id, reporter_id, guild_id, job_id, reason, now)) == 1


async def open_reporters(source: Source, character_id: int) -> int:
    row = await _one(
        source,
        "SELECT COUNT(*) FROM character_reports WHERE character_id = ? AND resolved_at IS NULL",
        (character_id,),
    )
    return int(row[0]) if row else 0


async def resolve_reports(conn: Connection, character_id: int, now: float) -> int:
    sql = "UPDATE character_reports SET resolved_at = ? WHERE character_id = ? AND resolved_at IS NULL"
    return await _changed(conn, sql, (now, character_id))


async def open_reports(source: Source, limit: int) -> tuple[list[OpenReport], int]:
    """Characters with open reports, the most reported first, and how many there are in all."""
    # the distinct reasons, most frequent first, as a JSON array
    if dialect(source) == "postgresql":
        reasons = (
            "(SELECT CAST(COALESCE(json_agg(reason ORDER BY n DESC, reason), '[]') AS TEXT) FROM (SELECT reason, "
            "COUNT(*) AS n FROM character_reports r2 WHERE r2.character_id = c.id AND r2.resolved_at IS NULL "
            "GROUP BY reason) AS counted)"
        )
    else:
        reasons = (
            "(SELECT json_group_array(reason) FROM (SELECT reason FROM character_reports r2 "
            " WHERE r2.character_id = c.id AND r2.resolved_at IS NULL GROUP BY reason ORDER BY COUNT(*) DESC, reason))"
        )
    rows = await _all(
        source,
        "SELECT c.id AS character_id, c.name, c.share_code, c.guild_id, c.hidden_at, c.taken_down_at, "
        f"COUNT(*) AS reporters, MAX(r.created_at) AS latest, {reasons} "
        "AS reasons FROM character_reports r JOIN characters c ON c.id = r.character_id "
        "WHERE r.resolved_at IS NULL GROUP BY c.id ORDER BY reporters DESC, latest DESC LIMIT ?",
        (limit,),
    )
    total = await _one(source, "SELECT COUNT(DISTINCT character_id) FROM character_reports WHERE resolved_at IS NULL")
    found = [mapped(OpenReport, r, reasons=tuple(json.loads(r["reasons"]))) for r in rows]
    return found, int(total[0]) if total else 0


async def job_characters(source: Source, job_id: int) -> JobCharacters | None:
    row = await _one(source, "SELECT id, guild_id, user_id, request_json FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        return None
    chosen = json.loads(row["request_json"]).get("characters", [])
    ids = tuple(dict.fromkeys(int(c["id"]) for c in chosen if "id" in c))
    return JobCharacters(int(row["id"]), int(row["guild_id"]), int(row["user_id"]), ids)


# --- consents -------------------------------------------------------------------------------------


async def add_consent(conn: Connection, *, character_id: int, user_id: int, visibility: str, now: float) -> None:
    await conn.execute(
        "INSERT INTO character_consents (character_id, user_id, visibility, created_at) VALUES (?, ?, ?, ?)",
        (character_id, user_id, visibility, now),
    )


# --- guild settings -------------------------------------------------------------------------------

_SETTING_COLUMNS = ("allow_imports", "report_channel_id", "require_consent")


async def settings(source: Source, guild_id: int) -> TrustSettings:
    row = await _one(
        source,
        "SELECT allow_imports, report_channel_id, require_consent FROM guild_settings WHERE guild_id = ?",
        (guild_id,),
    )
    if row is None:
        return TrustSettings()
    return TrustSettings(bool(row["allow_imports"]), row["report_channel_id"], bool(row["require_consent"]))


async def change_settings(conn: Connection, guild_id: int, changes: dict[str, Any], now: float) -> None:
    await guilds.upsert(conn, guild_id, changes, now, columns=_SETTING_COLUMNS)


# --- who imported a character ---------------------------------------------------------------------


async def importers(source: Source, character_id: int, limit: int) -> list[Importer]:
    rows = await _all(
        source,
        "SELECT guild_id, COUNT(*) AS aliases FROM character_imports WHERE character_id = ? "
        "GROUP BY guild_id ORDER BY MIN(created_at) LIMIT ?",
        (character_id, limit),
    )
    return [mapped(Importer, r) for r in rows]


async def ban_import(conn: Connection, character_id: int, guild_id: int, by: int, now: float) -> int:
    """Remove the guild's import of the character and keep it from importing it again."""
    await conn.execute(
        "INSERT INTO character_import_bans (character_id, guild_id, banned_by, created_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (character_id, guild_id, by, now),
    )
    return await _changed(
        conn, "DELETE FROM character_imports WHERE character_id = ? AND guild_id = ?", (character_id, guild_id)
    )


async def import_banned(source: Source, character_id: int, guild_id: int) -> bool:
    row = await _one(
        source,
        "SELECT 1 FROM character_import_bans WHERE character_id = ? AND guild_id = ?",
        (character_id, guild_id),
    )
    return row is not None
