"""Per-guild settings and the moderator check every privileged service call goes through."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.db import Database
from bot.errors import GuildOnly, NotModerator
from bot.services.actors import Actor
from bot.store import guilds as store


@dataclass(frozen=True)
class GuildSettings:
    guild_id: int
    moderator_role_id: int | None = None
    timezone: str = "UTC"
    locale: str | None = None
    providers: tuple[str, ...] | None = None  # None: the instance's PROVIDERS order
    priority: str = "cost"
    fallback: bool = False
    monthly_limit_micros: int | None = None  # None: no budget set (paid providers refused)
    member_daily_limit_micros: int | None = None
    max_active_per_member: int = 2
    max_active_per_guild: int = 10


class GuildService:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def get(self, guild_id: int) -> GuildSettings:
        row = await store.get(self._db, guild_id)
        if row is None:
            return GuildSettings(guild_id=guild_id)
        return GuildSettings(
            guild_id=guild_id,
            moderator_role_id=row["moderator_role_id"],
            timezone=row["timezone"],
            locale=row["locale"],
            providers=tuple(p for p in row["providers"].split(",") if p) if row["providers"] else None,
            priority=row["priority"],
            fallback=bool(row["fallback"]),
            monthly_limit_micros=row["monthly_limit_micros"],
            member_daily_limit_micros=row["member_daily_limit_micros"],
            max_active_per_member=row["max_active_per_member"],
            max_active_per_guild=row["max_active_per_guild"],
        )

    async def is_moderator(self, actor: Actor) -> bool:
        """Manage Server, or the guild's configured moderator role. Checked on every call."""
        if actor.guild_id is None:
            return False
        if actor.manage_guild:
            return True
        settings = await self.get(actor.guild_id)
        return settings.moderator_role_id is not None and settings.moderator_role_id in actor.role_ids

    async def require_moderator(self, actor: Actor) -> int:
        """The actor's guild id, or NotModerator / GuildOnly."""
        if actor.guild_id is None:
            raise GuildOnly()
        if not await self.is_moderator(actor):
            raise NotModerator()
        return actor.guild_id

    async def update(self, actor: Actor, **changes: Any) -> GuildSettings:
        """Change settings as a moderator; values are already validated by the calling service."""
        guild_id = await self.require_moderator(actor)
        if "providers" in changes and changes["providers"] is not None:
            changes["providers"] = ",".join(changes["providers"])
        if "fallback" in changes:
            changes["fallback"] = int(bool(changes["fallback"]))
        async with self._db.transaction() as conn:
            await store.upsert(conn, guild_id, changes, self._clock())
        return await self.get(guild_id)
