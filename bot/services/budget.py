"""Budgets: admission holds, settlement, the moderator's limits and what /budget show reads.

Three scopes per job: the operator's monthly cap (UTC months, GLOBAL_MONTHLY_BUDGET_USD), the
guild's monthly limit and an optional per-member daily limit (both in the guild's timezone).
Counter rows are created lazily per period, so nothing ever resets. A hold re-reads the limits
inside the admission transaction: a /budget set that commits between plan() and hold() is
honoured, and a guild whose budget was removed meanwhile cannot open an unlimited row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from bot.config import Settings
from bot.db import Connection, Database
from bot.domain.money import Money, format_usd, parse_usd, usd_to_micros
from bot.domain.periods import PeriodKeys, period_keys
from bot.errors import GuildOnly, UserFacingError
from bot.services.actors import Actor
from bot.services.guilds import GuildService, GuildSettings
from bot.store import budgets as store
from bot.store import guilds as guild_store
from bot.store import jobs as jobs_store
from bot.store.budgets import GUILD, MEMBER, Drift, Scope, job_scopes

__all__ = [
    "BudgetExceeded",
    "BudgetOverview",
    "BudgetPlan",
    "BudgetService",
    "Drift",
    "NoBudgetSet",
    "NotHeld",
    "Spender",
    "TooManyActiveJobs",
    "Usage",
    "format_usd",
    "parse_usd",
]

log = logging.getLogger(__name__)

# Words a moderator can type for "no daily cap" in /budget set member_daily_usd.
NO_LIMIT_WORDS: Final = frozenset({"none", "off", "no", "unlimited", "-", "remove"})


class NoBudgetSet(UserFacingError):
    def __init__(self) -> None:
        super().__init__("budget.error.no_budget")


class BudgetExceeded(UserFacingError):
    """The hold does not fit in `scope` (global | guild | member); `remaining` is what is left there."""

    def __init__(self, scope: str, remaining: int, needed: int) -> None:
        super().__init__(f"budget.error.exceeded.{scope}", remaining=Money(remaining), needed=Money(needed))
        self.scope = scope
        self.remaining = remaining
        self.needed = needed


class TooManyActiveJobs(UserFacingError):
    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"budget.error.too_many_active.{scope}", limit=limit)
        self.scope = scope
        self.limit = limit


class NotHeld(RuntimeError):
    """Settlement of a job that has no hold on the ledger (a programming error, not a member's)."""


@dataclass(frozen=True)
class BudgetPlan:
    """The periods a job is admitted under and its three scopes (limits as read at plan time;
    hold() refreshes them inside its transaction)."""

    periods: PeriodKeys
    scopes: tuple[Scope, Scope, Scope]

    @property
    def guild_id(self) -> int:
        return int(self.scopes[1].scope_id)

    @property
    def user_id(self) -> int:
        return int(self.scopes[2].scope_id.split(":", 1)[1])


@dataclass(frozen=True)
class Usage:
    """One scope in one period: its current limit (None: unlimited / not set) and the money in it."""

    period: str
    limit_micros: int | None
    held_micros: int = 0
    spent_micros: int = 0

    @property
    def remaining(self) -> int | None:
        if self.limit_micros is None:
            return None
        return max(0, self.limit_micros - self.held_micros - self.spent_micros)

    @property
    def over_limit(self) -> bool:
        return self.limit_micros is not None and self.held_micros + self.spent_micros > self.limit_micros


@dataclass(frozen=True)
class Spender:
    user_id: int
    spent_micros: int
    held_micros: int


@dataclass(frozen=True)
class BudgetOverview:
    """What /budget show reads: this month for the guild, today for the member, the operator's cap."""

    guild_id: int
    user_id: int
    timezone: str
    guild: Usage
    member: Usage
    operator: Usage
    is_moderator: bool = False
    top_spenders: tuple[Spender, ...] = ()

    @property
    def budget_set(self) -> bool:
        return self.guild.limit_micros is not None

    @property
    def remaining(self) -> int | None:
        """What the member can still hold for paid video now: the tightest of the three scopes."""
        if not self.budget_set:
            return 0
        left = [u.remaining for u in (self.guild, self.member, self.operator) if u.remaining is not None]
        return min(left) if left else None

    @property
    def operator_binding(self) -> bool:
        """The operator's cap, not the guild's, is what limits this guild now."""
        op, guild = self.operator.remaining, self.guild.remaining
        return op is not None and (guild is None or op < guild)


class BudgetService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        guilds: GuildService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._guilds = guilds
        self._clock = clock
        configured = settings.global_monthly_budget_usd
        self.global_limit: int | None = None if configured is None else usd_to_micros(configured)

    # --- admission and settlement (called by generation) --------------------------------------

    async def plan(self, guild_id: int, user_id: int, *, paid: bool, now: float) -> BudgetPlan:
        """Period keys in the guild's timezone and the scopes a job will hold in.

        Raises NoBudgetSet for a paid job in a guild without a monthly limit; a free job (the
        local provider) needs none."""
        guild = await self._guilds.get(guild_id)
        if paid and guild.monthly_limit_micros is None:
            raise NoBudgetSet()
        periods = period_keys(now, guild.timezone)
        return BudgetPlan(periods, self._scopes(guild_id, user_id, periods, guild))

    def _scopes(
        self, guild_id: int, user_id: int, periods: PeriodKeys, guild: GuildSettings
    ) -> tuple[Scope, Scope, Scope]:
        return self._scopes_with(
            guild_id, user_id, periods, guild.monthly_limit_micros, guild.member_daily_limit_micros
        )

    def _scopes_with(
        self, guild_id: int, user_id: int, periods: PeriodKeys, monthly: int | None, daily: int | None
    ) -> tuple[Scope, Scope, Scope]:
        return job_scopes(
            guild_id,
            user_id,
            periods.global_month,
            periods.guild_month,
            periods.member_day,
            global_limit=self.global_limit,
            guild_limit=monthly,
            member_limit=daily,
        )

    async def hold(self, conn: Connection, job_id: int, plan: BudgetPlan, amount: int, now: float) -> None:
        """Hold `amount` in all three scopes or none, inside the caller's transaction (the job row
        must already be inserted). Raises BudgetExceeded naming the short scope, or NoBudgetSet."""
        if amount < 0:
            raise ValueError("a hold cannot be negative")
        # Limits as committed now, not as plan() saw them: the transaction serialises this with
        # /budget set, so the row never keeps a stale (or missing) limit.
        monthly, daily = await store.guild_limits(conn, plan.guild_id)
        if amount > 0 and monthly is None:
            raise NoBudgetSet()
        scopes = self._scopes_with(plan.guild_id, plan.user_id, plan.periods, monthly, daily)
        await store.sync_limits(conn, scopes)
        if amount == 0:
            await store.hold_free(conn, job_id, scopes, now)
            return
        try:
            await store.hold(conn, job_id, scopes, amount, now)
        except store.InsufficientBudget as short:
            raise BudgetExceeded(short.scope.scope, short.remaining, amount) from short

    async def check_activity(self, conn: Connection, guild_id: int, user_id: int, settings: GuildSettings) -> None:
        """Refuse a new job when the member or the guild already has the most active jobs allowed
        (held/submitting/queued/running/ambiguous). Call inside the admission transaction."""
        await jobs_store.admissions_take_turns(conn, guild_id)
        if await jobs_store.count_active(conn, guild_id, user_id) >= settings.max_active_per_member:
            raise TooManyActiveJobs(MEMBER, settings.max_active_per_member)
        if await jobs_store.count_active(conn, guild_id) >= settings.max_active_per_guild:
            raise TooManyActiveJobs(GUILD, settings.max_active_per_guild)

    async def settle(self, conn: Connection, job_id: int, captured: int, now: float, reason: str = "") -> None:
        """Capture `captured` and release the rest of the job's hold, in the periods that held it.

        A capture above the hold captures the hold and records the excess as an overrun (logged:
        the estimate was not worst-case). A second settlement raises store.AlreadySettled and the
        caller's transaction rolls back."""
        if captured < 0:
            raise ValueError("a capture cannot be negative")
        job = await store.job_money(conn, job_id)
        if job is None:
            raise NotHeld(f"job {job_id} does not exist")
        if job.held_micros is None:
            raise NotHeld(f"job {job_id} has no hold on the ledger")
        if job.held_micros != job.estimate_micros:
            log.warning(
                "job %s: ledger hold %d differs from its estimate %d", job_id, job.held_micros, job.estimate_micros
            )
        scopes = job_scopes(job.guild_id, job.user_id, job.global_period, job.guild_period, job.member_period)
        overrun = max(0, captured - job.held_micros)
        await store.settle(conn, job_id, scopes, job.held_micros, captured - overrun, now, reason)
        if overrun:
            await store.record_overrun(conn, job_id, scopes, overrun, now, reason)
            log.warning(
                "job %s cost %d micro-USD, %d more than its hold; recorded as an overrun", job_id, captured, overrun
            )

    async def release(self, conn: Connection, job_id: int, now: float, reason: str) -> None:
        """Give the whole hold back (a failed, rejected or canceled job)."""
        await self.settle(conn, job_id, 0, now, reason)

    # --- read models --------------------------------------------------------------------------

    async def usage(self, guild_id: int, user_id: int, now: float | None = None) -> BudgetOverview:
        """Limits, held, spent and remaining for a guild this month and a member today (no
        authorisation: nothing private; the generation flow can show it after a job)."""
        when = self._clock() if now is None else now
        guild = await self._guilds.get(guild_id)
        periods = period_keys(when, guild.timezone)
        scopes = self._scopes(guild_id, user_id, periods, guild)
        counters = await store.read_counters(self._db, scopes)

        def usage_of(scope: Scope) -> Usage:
            found = counters.get(scope.key)
            held, spent = (found.held_micros, found.spent_micros) if found else (0, 0)
            # The current setting is the limit, even for a row created under an older one.
            return Usage(scope.period_key, scope.limit_micros, held, spent)

        operator, guild_usage, member = (usage_of(s) for s in scopes)
        return BudgetOverview(
            guild_id=guild_id,
            user_id=user_id,
            timezone=guild.timezone,
            guild=guild_usage,
            member=member,
            operator=operator,
        )

    async def overview(self, actor: Actor, now: float | None = None) -> BudgetOverview:
        """/budget show: the guild and the actor; moderators also get the month's top spenders."""
        if actor.guild_id is None:
            raise GuildOnly()
        base = await self.usage(actor.guild_id, actor.user_id, now)
        if not await self._guilds.is_moderator(actor):
            return base
        rows = await store.top_spenders(self._db, actor.guild_id, base.guild.period)
        spenders = tuple(Spender(r.user_id, r.spent_micros, r.held_micros) for r in rows)
        return replace(base, is_moderator=True, top_spenders=spenders)

    # --- the moderator's limits ---------------------------------------------------------------

    async def set_limits(
        self, actor: Actor, monthly_usd: str, member_daily_usd: str | None = None, now: float | None = None
    ) -> BudgetOverview:
        """/budget set. Moderators only (checked here, on every call). `member_daily_usd` None
        keeps the current daily cap; `none`/`off`/`unlimited` removes it.

        A limit below what is already spent is accepted: new holds are refused, jobs already
        running keep their holds and settle normally."""
        guild_id = await self._guilds.require_moderator(actor)
        changes: dict[str, int | None] = {"monthly_limit_micros": parse_usd(monthly_usd)}
        if member_daily_usd is not None:
            typed = member_daily_usd.strip().lower()
            changes["member_daily_limit_micros"] = None if typed in NO_LIMIT_WORDS else parse_usd(member_daily_usd)
        when = self._clock() if now is None else now
        async with self._db.transaction() as conn:
            guild = await self._guilds.get(guild_id)
            daily = changes.get("member_daily_limit_micros", guild.member_daily_limit_micros)
            await guild_store.upsert(conn, guild_id, dict(changes), when)
            periods = period_keys(when, guild.timezone)
            await store.set_current_limits(
                conn,
                guild_id,
                periods.guild_month,
                periods.member_day,
                monthly=changes["monthly_limit_micros"],
                member_daily=daily,
            )
        log.info(
            "guild %s budget set by %s: monthly=%s member_daily=%s",
            guild_id,
            actor.user_id,
            changes["monthly_limit_micros"],
            daily,
        )
        return await self.overview(actor, when)

    # --- startup audit ------------------------------------------------------------------------

    async def audit(self) -> list[Drift]:
        async with self._db.transaction() as conn:
            return await store.audit(conn)

    async def audit_and_report(self) -> list[Drift]:
        """Counters that disagree with the ledger, each logged as a WARNING (run at startup)."""
        drifts = await self.audit()
        for d in drifts:
            log.warning(
                "budget drift in %s %r period %s: counter held=%d spent=%d, ledger says held=%d spent=%d",
                d.scope,
                d.scope_id,
                d.period_key,
                d.counter_held,
                d.counter_spent,
                d.ledger_held,
                d.ledger_spent,
            )
        if not drifts:
            log.info("budget audit: counters match the ledger")
        return drifts
