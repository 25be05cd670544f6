"""Trust around shared likenesses: reports, operator takedowns, and the guild settings for them.

- A member reports a shared character (its public card, or a delivered video that used someone
  else's character). Reports are stored first, one per character and member; once
  `REPORT_THRESHOLD` distinct members have open reports, a public character is hidden from the
  community listing until an operator reviews it. Who to tell (the owner's guild's report channel,
  the operators) is returned to the caller, which posts: a failed post never loses a report.
- Operators (`OPERATOR_USER_IDS`, checked here on every call: Discord cannot hide a command from a
  server's admins per user) take a character down by its share code: from then on it cannot be
  used for a new job, imported or listed anywhere; jobs already admitted finish. Restore undoes
  a takedown or a hiding. Each action is written to the append-only `operator_audit` table.
- Moderators choose whether their server may import public characters and where reports of their
  server's characters go.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.db import Database
from bot.errors import GuildOnly, UserFacingError
from bot.services.actors import Actor
from bot.services.characters.text import normalise_share_code, shown
from bot.services.guilds import GuildService
from bot.store import characters as characters_store
from bot.store import trust as store
from bot.store.characters import CharacterRow
from bot.store.trust import Importer, OpenReport, TrustSettings

log = logging.getLogger(__name__)

REASONS = ("not_me", "sexual", "minor", "hateful", "other")
REPORT_KINDS = ("c", "j")  # a character (its public card) or a job (a delivered video)
MAX_LISTED = 15  # open reports shown by /operator reports; the rest are counted
MAX_IMPORTERS = 25  # importing servers an owner can pick from: Discord's cap on a select's options

__all__ = ["REASONS", "REPORT_KINDS", "OpenReport", "TrustService", "TrustSettings"]


class NotOperator(UserFacingError):
    def __init__(self) -> None:
        super().__init__("trust.error.not_operator")


class UnknownCode(UserFacingError):
    def __init__(self, code: str) -> None:
        super().__init__("trust.error.unknown_code", code=shown(code, 20))


class AlreadyTakenDown(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("trust.error.already_taken_down", name=name)


class NothingToRestore(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("trust.error.nothing_to_restore", name=name)


class NotReportable(UserFacingError):
    def __init__(self) -> None:
        super().__init__("trust.error.not_reportable")


class NotOwnerOfImports(UserFacingError):
    def __init__(self) -> None:
        super().__init__("trust.error.not_owner")


class BadReason(UserFacingError):
    def __init__(self) -> None:
        super().__init__("trust.error.bad_reason")


@dataclass(frozen=True)
class OperatorResult:
    character_id: int
    name: str
    code: str
    home_guild_id: int
    owner_id: int
    importing_guilds: int
    resolved_reports: int


@dataclass(frozen=True)
class ReportsPage:
    items: tuple[OpenReport, ...]
    total: int  # characters with open reports, listed or not
    threshold: int


@dataclass(frozen=True)
class Reported:
    """One character a report named, and who should hear of it."""

    character_id: int
    name: str
    code: str | None
    owner_id: int
    home_guild_id: int
    reporters: int  # distinct members with an open report, this one included
    hidden_now: bool  # this report crossed the threshold
    report_channel_id: int | None  # the owner's guild's report channel, if its moderators set one


@dataclass(frozen=True)
class ReportOutcome:
    reason: str
    reporter_id: int
    where_guild_id: int | None
    job_id: int | None
    characters: tuple[Reported, ...]  # those this member had not reported yet
    already: bool  # the member had reported every one of them before
    operator_ids: tuple[int, ...]
    operator_channel_id: int | None = None  # OPERATOR_REPORT_CHANNEL_ID


# --- the service ----------------------------------------------------------------------------------


class TrustService:
    def __init__(
        self,
        db: Database,
        guilds: GuildService,
        *,
        operators: frozenset[int],
        threshold: int,
        operator_channel_id: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._guilds = guilds
        self._operators = operators
        self._threshold = threshold
        self._operator_channel_id = operator_channel_id
        self._clock = clock

    @property
    def operator_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._operators))

    def is_operator(self, user_id: int) -> bool:
        return user_id in self._operators

    def _require_operator(self, actor: Actor) -> None:
        if not self.is_operator(actor.user_id):
            log.warning("operator command refused to user %s (guild %s)", actor.user_id, actor.guild_id)
            raise NotOperator()

    async def _by_code(self, code: str) -> CharacterRow:
        canonical = normalise_share_code(code)
        row = await characters_store.by_share_code(self._db, canonical) if canonical else None
        if row is None:
            raise UnknownCode(code)
        return row

    # --- operators --------------------------------------------------------------------------------

    async def takedown(self, actor: Actor, code: str) -> OperatorResult:
        """The character stops working everywhere at once (admission, import, listing)."""
        self._require_operator(actor)
        row = await self._by_code(code)
        now = self._clock()
        async with self._db.transaction() as conn:
            if not await store.set_taken_down(conn, row.id, now):
                raise AlreadyTakenDown(row.name)
            resolved = await store.resolve_reports(conn, row.id, now)
            await store.audit(
                conn,
                operator_id=actor.user_id,
                action="takedown",
                character_id=row.id,
                guild_id=actor.guild_id,
                detail=f"code={row.share_code} owner={row.owner_id} guild={row.guild_id} reports={resolved}",
                now=now,
            )
        return await self._result(row, resolved)

    async def restore(self, actor: Actor, code: str) -> OperatorResult:
        """Undo a takedown, or end a hiding after review: the character works and lists again."""
        self._require_operator(actor)
        row = await self._by_code(code)
        now = self._clock()
        async with self._db.transaction() as conn:
            changed = await store.set_taken_down(conn, row.id, None)
            changed = await store.unhide(conn, row.id) or changed
            if not changed:
                raise NothingToRestore(row.name)
            resolved = await store.resolve_reports(conn, row.id, now)
            await store.audit(
                conn,
                operator_id=actor.user_id,
                action="restore",
                character_id=row.id,
                guild_id=actor.guild_id,
                detail=f"code={row.share_code} reports={resolved}",
                now=now,
            )
        return await self._result(row, resolved)

    async def _result(self, row: CharacterRow, resolved: int) -> OperatorResult:
        guilds = len(await store.importers(self._db, row.id, 10_000))
        return OperatorResult(row.id, row.name, row.share_code or "", row.guild_id, row.owner_id, guilds, resolved)

    async def open_reports(self, actor: Actor) -> ReportsPage:
        self._require_operator(actor)
        items, total = await store.open_reports(self._db, MAX_LISTED)
        async with self._db.transaction() as conn:
            await store.audit(
                conn,
                operator_id=actor.user_id,
                action="reports",
                character_id=None,
                guild_id=actor.guild_id,
                detail=f"open={total}",
                now=self._clock(),
            )
        return ReportsPage(tuple(items), total, self._threshold)

    # --- reports ----------------------------------------------------------------------------------

    async def reportable(self, actor: Actor, kind: str, target_id: int) -> list[CharacterRow]:
        """The shared characters a Report button names (NotReportable when none)."""
        if kind == "c":
            row = await characters_store.get(self._db, target_id)
            if row is None or row.deleted_at is not None or row.share_code is None:
                raise NotReportable()
            return [row]
        if kind != "j":
            raise NotReportable()
        job = await store.job_characters(self._db, target_id)
        if job is None:
            raise NotReportable()
        rows = [await characters_store.get(self._db, i) for i in job.character_ids]
        shared = [r for r in rows if r is not None and _shared_beyond(r, job.guild_id, job.user_id)]
        if not shared:
            raise NotReportable()
        return shared

    async def reportable_job(self, job_id: int) -> bool:
        """Whether a delivered video used a character shared by someone else (it gets a Report button)."""
        job = await store.job_characters(self._db, job_id)
        if job is None or not job.character_ids:
            return False
        rows = [await characters_store.get(self._db, i) for i in job.character_ids]
        return any(r is not None and _shared_beyond(r, job.guild_id, job.user_id) for r in rows)

    async def report(self, actor: Actor, kind: str, target_id: int, reason: str) -> ReportOutcome:
        """Store the member's report of each shared character the button names; hide a public one
        whose distinct open reporters reach the threshold. Nothing is posted here."""
        if reason not in REASONS:
            raise BadReason()
        rows = await self.reportable(actor, kind, target_id)
        job_id = target_id if kind == "j" else None
        now = self._clock()
        reported: list[Reported] = []
        async with self._db.transaction() as conn:
            for row in rows:
                added = await store.add_report(
                    conn,
                    character_id=row.id,
                    reporter_id=actor.user_id,
                    guild_id=actor.guild_id,
                    job_id=job_id,
                    reason=reason,
                    now=now,
                )
                if not added:
                    continue
                count = await store.open_reporters(conn, row.id)
                hidden = False
                if count >= self._threshold and row.visibility == "public":
                    hidden = await store.hide(conn, row.id, now)
                channel = (await store.settings(conn, row.guild_id)).report_channel_id
                reported.append(
                    Reported(row.id, row.name, row.share_code, row.owner_id, row.guild_id, count, hidden, channel)
                )
        return ReportOutcome(
            reason=reason,
            reporter_id=actor.user_id,
            where_guild_id=actor.guild_id,
            job_id=job_id,
            characters=tuple(reported),
            already=not reported,
            operator_ids=self.operator_ids,
            operator_channel_id=self._operator_channel_id,
        )

    # --- the owner's view of who imported a character -------------------------------------------

    async def _owned(self, actor: Actor, character_id: int) -> CharacterRow:
        row = await characters_store.get(self._db, character_id)
        if row is None or row.deleted_at is not None or row.guild_id != actor.guild_id or row.owner_id != actor.user_id:
            raise NotOwnerOfImports()
        return row

    async def importers(self, actor: Actor, character_id: int) -> tuple[str, list[Importer]]:
        """The servers that imported the owner's character (the first MAX_IMPORTERS, oldest first)."""
        row = await self._owned(actor, character_id)
        return row.name, await store.importers(self._db, row.id, MAX_IMPORTERS)

    async def revoke_import(self, actor: Actor, character_id: int, guild_id: int) -> str:
        """The owner withdraws the character from one server: its import goes, and that server
        cannot import it again. Returns the character's name."""
        row = await self._owned(actor, character_id)
        async with self._db.transaction() as conn:
            await store.ban_import(conn, row.id, guild_id, actor.user_id, self._clock())
        return row.name

    # --- moderators' settings ---------------------------------------------------------------------

    async def settings(self, guild_id: int) -> TrustSettings:
        return await store.settings(self._db, guild_id)

    async def change_settings(
        self,
        actor: Actor,
        *,
        allow_imports: bool | None = None,
        report_channel_id: int | None = None,
        require_consent: bool | None = None,
    ) -> tuple[TrustSettings, tuple[str, ...]]:
        """Moderators only; None leaves a setting as it is. Returns the settings and the names changed."""
        if actor.guild_id is None:
            raise GuildOnly()
        guild_id = await self._guilds.require_moderator(actor)
        changes: dict[str, object] = {}
        if allow_imports is not None:
            changes["allow_imports"] = int(allow_imports)
        if report_channel_id is not None:
            changes["report_channel_id"] = report_channel_id
        if require_consent is not None:
            changes["require_consent"] = int(require_consent)
        if changes:
            async with self._db.transaction() as conn:
                await store.change_settings(conn, guild_id, dict(changes), self._clock())
        names = {"report_channel_id": "report_channel"}
        return await self.settings(guild_id), tuple(names.get(k, k) for k in changes)


def _shared_beyond(row: CharacterRow, guild_id: int, user_id: int) -> bool:
    """A character someone else shared: imported from another guild, someone else's, or public."""
    return row.guild_id != guild_id or row.owner_id != user_id or row.visibility == "public"
