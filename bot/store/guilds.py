"""guild_settings rows."""

from __future__ import annotations

from typing import Any

from bot.db import Connection, Database, Row

COLUMNS = (
    "moderator_role_id",
    "timezone",
    "locale",
    "providers",
    "priority",
    "fallback",
    "monthly_limit_micros",
    "member_daily_limit_micros",
    "max_active_per_member",
    "max_active_per_guild",
)


async def get(db: Database, guild_id: int) -> Row | None:
    return await db.fetchone("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))


async def upsert(
    conn: Connection, guild_id: int, changes: dict[str, Any], now: float, *, columns: tuple[str, ...] = COLUMNS
) -> None:
    """Create the guild's row if needed and set `changes`, each one of `columns` (another area's
    settings pass theirs: bot/store/trust.py)."""
    unknown = set(changes) - set(columns)
    if unknown:
        raise ValueError(f"unknown guild setting(s): {', '.join(sorted(unknown))}")
    await conn.execute(
        "INSERT INTO guild_settings (guild_id, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (guild_id, now, now),
    )
    if changes:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        await conn.execute(
            f"UPDATE guild_settings SET {assignments}, updated_at = ? WHERE guild_id = ?",
            (*changes.values(), now, guild_id),
        )
