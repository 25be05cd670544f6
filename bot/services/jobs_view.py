"""/jobs: a member's recent jobs with their money, read from the jobs table and the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from bot.db import Database
from bot.errors import GuildOnly, UserFacingError
from bot.services.actors import Actor
from bot.services.guilds import GuildService
from bot.store import budgets as store
from bot.store.budgets import JobLine

__all__ = ["JobLine", "JobsList", "JobsViewService", "OthersJobsNeedModerator"]

DEFAULT_LIMIT = 10


class OthersJobsNeedModerator(UserFacingError):
    def __init__(self) -> None:
        super().__init__("jobs.error.others")


@dataclass(frozen=True)
class JobsList:
    guild_id: int
    user_id: int  # whose jobs these are
    own: bool  # the actor's own jobs
    jobs: tuple[JobLine, ...]


class JobsViewService:
    def __init__(self, db: Database, guilds: GuildService) -> None:
        self._db = db
        self._guilds = guilds

    async def recent(self, actor: Actor, member_id: int | None = None, limit: int = DEFAULT_LIMIT) -> JobsList:
        """The actor's recent jobs in this guild, or (moderators only) another member's."""
        if actor.guild_id is None:
            raise GuildOnly()
        target = actor.user_id if member_id is None else member_id
        own = target == actor.user_id
        if not own and not await self._guilds.is_moderator(actor):
            raise OthersJobsNeedModerator()
        rows = await store.recent_jobs(self._db, actor.guild_id, target, limit)
        return JobsList(guild_id=actor.guild_id, user_id=target, own=own, jobs=tuple(rows))
