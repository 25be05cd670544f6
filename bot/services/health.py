"""Per-provider circuit breakers kept in SQLite (ARCHITECTURE.md, "Routing").

    closed ──repeated failures──▶ open ──open_until passes, allow()──▶ half_open (one probe)
      ▲                            ▲                                     │
      └────────── success ─────────┼──────────── failure (doubled) ◀─────┘
    any state ──auth or balance error──▶ disabled ──moderator enable()──▶ closed

- Fed by `record()` after submits, polls and final outcomes. Counted as failures: NotSent
  (connect errors, 503), Unavailable, Ambiguous and unclassified errors. Neutral: RateLimited
  (backpressure, not an outage) and every Rejected (the member's request, not the provider, is
  the problem: moderation, invalid, unsupported). Neutral outcomes write no event.
- Opens on ≥ `min_failures` failures making ≥ `failure_ratio` of the events in the last
  `window_seconds`, or `consecutive_to_open` submit failures in a row. Closing (a good probe, a moderator)
  deletes the provider's events, so a recovered provider starts clean. Open for 60 s, doubling per
  reopen up to 15 min; a successful probe resets that.
- Half-open reacts to the first conclusive outcome of any job: success closes, failure reopens.
  A neutral outcome (or `release_probe`) hands the probe back; a probe nobody reports on for
  `probe_timeout_seconds` (a crash) is handed out again.
- `disabled` (AuthFailed, QuotaExhausted) lasts until a moderator calls `enable()`. The breaker
  is instance-wide and the operator has no Discord identity, so a moderator of *any* guild that
  uses the provider may re-enable it; a key that is still bad disables it again on the next job.

All state is in the database (rows `provider_health`, `provider_events`), so it survives
restarts and any number of HealthService instances over one Database agree. `provider_health.
updated_at` is when the row entered its current state (for half_open: when the probe went out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from typing import Literal, cast

from bot.db import Connection, Database, Row
from bot.providers.base import Ambiguous, AuthFailed, ProviderError, QuotaExhausted, RateLimited, Rejected
from bot.services.actors import Actor
from bot.services.guilds import GuildService
from bot.services.routing import BreakerState, BreakerStateName, Exclusion, ProviderNotAllowed

log = logging.getLogger(__name__)

Phase = Literal["submit", "poll", "outcome"]
Outcome = Literal["success", "failure", "neutral", "disable"]
PHASES: frozenset[str] = frozenset({"submit", "poll", "outcome"})
REASON_MAX = 200

__all__ = ["PHASES", "BreakerState", "HealthService", "Outcome", "Phase", "classify"]


def classify(ok: bool, error: ProviderError | None) -> Outcome:
    """What one provider outcome means for its breaker."""
    if ok:
        return "success"
    if isinstance(error, AuthFailed | QuotaExhausted):
        return "disable"
    if isinstance(error, RateLimited | Rejected):
        return "neutral"
    # NotSent (connect errors, 503), Unavailable, Ambiguous, anything unclassified
    return "failure"


def _reason(error: ProviderError | None) -> str:
    """Why a provider was disabled, safe to show: adapters' messages never hold secrets or raw bodies."""
    if error is None:
        return "disabled"
    text = error.message + (f" ({error.code})" if error.code else "")
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


def _detail(error: ProviderError | None) -> str | None:
    if error is None:
        return None
    kind = "Ambiguous" if isinstance(error, Ambiguous) else type(error).__name__
    return f"{kind}: {error.code}" if error.code else kind


class HealthService:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        *,
        guilds: GuildService,
        configured: Collection[str] | None = None,
        window_seconds: float = 600,
        min_failures: int = 5,
        failure_ratio: float = 0.5,
        consecutive_to_open: int = 3,
        open_base_seconds: float = 60,
        open_max_seconds: float = 900,
        probe_timeout_seconds: float = 600,
    ) -> None:
        """`configured`: the provider names `enable()` accepts (None: any name)."""
        if probe_timeout_seconds <= 0 or window_seconds <= 0 or consecutive_to_open < 1:
            raise ValueError("window, probe timeout and consecutive count must be positive")
        self._db = db
        self._clock = clock
        self._guilds = guilds
        self._configured = frozenset(configured) if configured is not None else None
        self._window = window_seconds
        self._min_failures = min_failures
        self._ratio = failure_ratio
        self._consecutive = consecutive_to_open
        self._open_base = open_base_seconds
        self._open_max = open_max_seconds
        self._probe_timeout = probe_timeout_seconds

    def open_seconds(self, open_count: int) -> float:
        """How long the `open_count`-th open in a row lasts: base, doubling, capped."""
        return float(min(self._open_base * 2 ** max(open_count - 1, 0), self._open_max))

    # --- reading ----------------------------------------------------------------------------

    async def states(self, providers: Iterable[str] = ()) -> dict[str, BreakerState]:
        """Every provider with a stored state, plus `providers` (closed when never seen)."""
        now = self._clock()
        rows = await self._db.fetchall(
            "SELECT provider, state, open_until, disabled_reason, updated_at FROM provider_health"
        )
        counts = await self._db.fetchall(
            "SELECT provider, COUNT(*) AS total, CAST(SUM(CASE WHEN ok = 0 THEN 1 ELSE 0 END) AS BIGINT) AS failures"
            " FROM provider_events WHERE at >= ? GROUP BY provider",
            (now - self._window,),
        )
        recent = {r["provider"]: (int(r["failures"] or 0), int(r["total"])) for r in counts}
        result: dict[str, BreakerState] = {}
        for row in rows:
            result[row["provider"]] = self._state(row, now, recent.get(row["provider"], (0, 0)))
        for name in providers:
            if name not in result:
                failures, total = recent.get(name, (0, 0))
                result[name] = BreakerState(name, recent_failures=failures, recent_events=total)
        return result

    async def state(self, provider: str) -> BreakerState:
        return (await self.states([provider]))[provider]

    def _state(self, row: Row, now: float, recent: tuple[int, int]) -> BreakerState:
        state = cast(BreakerStateName, row["state"])
        return BreakerState(
            provider=row["provider"],
            state=state,
            open_until=row["open_until"] if state == "open" else None,
            reason=row["disabled_reason"] if state == "disabled" else None,
            probe_in_flight=state == "half_open" and now - row["updated_at"] < self._probe_timeout,
            recent_failures=recent[0],
            recent_events=recent[1],
        )

    # --- the probe ----------------------------------------------------------------------------

    async def allow(self, provider: str) -> bool:
        """May a job be sent to `provider` now? An expired open breaker grants exactly one probe."""
        now = self._clock()
        row = await self._db.fetchone(
            "SELECT state, open_until, updated_at FROM provider_health WHERE provider = ?", (provider,)
        )
        if row is None or row["state"] == "closed":
            return True
        if row["state"] == "disabled":
            return False
        if row["state"] == "open" and row["open_until"] is not None and now < row["open_until"]:
            return False
        if row["state"] == "half_open" and now - row["updated_at"] < self._probe_timeout:
            return False
        # A probe may be due: the conditional UPDATE lets exactly one concurrent caller have it.
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE provider_health SET state = 'half_open', updated_at = ?"
                " WHERE provider = ? AND ((state = 'open' AND (open_until IS NULL OR open_until <= ?))"
                " OR (state = 'half_open' AND updated_at <= ?))",
                (now, provider, now, now - self._probe_timeout),
            )
            granted = cursor.rowcount == 1
        if granted:
            log.info("provider %s: half-open, one probe job allowed", provider)
        return granted

    async def release_probe(self, provider: str) -> None:
        """Give back a probe that allow() granted but that was never sent (it proved nothing)."""
        now = self._clock()
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE provider_health SET state = 'open', open_until = ?, updated_at = ?"
                " WHERE provider = ? AND state = 'half_open'",
                (now, now, provider),
            )

    # --- outcomes -----------------------------------------------------------------------------

    async def record(self, provider: str, *, ok: bool, error: ProviderError | None = None, phase: str) -> None:
        """Feed one submit / poll / final outcome of `provider` to its breaker."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {sorted(PHASES)}, not {phase!r}")
        outcome = classify(ok, error)
        now = self._clock()
        async with self._db.transaction() as conn:
            row = await _row(conn, provider)
            if outcome != "neutral":
                await conn.execute(
                    "INSERT INTO provider_events (provider, at, phase, ok, detail) VALUES (?, ?, ?, ?, ?)",
                    (provider, now, phase, int(outcome == "success"), _detail(error)),
                )
            await conn.execute(
                "DELETE FROM provider_events WHERE provider = ? AND at < ?", (provider, now - self._window)
            )
            change = await self._transition(conn, provider, row, outcome, now, _reason(error))
            if change is not None:
                await _save(conn, provider, now, *change)
        if change is not None:
            state, open_until, _, reason = change
            log.warning(
                "provider %s: breaker %s -> %s%s%s",
                provider,
                row["state"] if row else "closed",
                state,
                f" until {open_until:.0f}" if open_until is not None else "",
                f" ({reason})" if reason else "",
            )

    async def _transition(
        self,
        conn: Connection,
        provider: str,
        row: Row | None,
        outcome: Outcome,
        now: float,
        reason: str,
    ) -> tuple[str, float | None, int, str | None] | None:
        """The new (state, open_until, open_count, reason), or None to leave the row alone."""
        current = row["state"] if row else "closed"
        opens = int(row["open_count"]) if row else 0
        if outcome == "disable":
            return ("disabled", None, 0, reason)
        if current == "half_open":
            if outcome == "success":
                return ("closed", None, 0, None)
            if outcome == "failure":
                return ("open", now + self.open_seconds(opens + 1), opens + 1, None)
            return ("open", now, opens, None)  # neutral: the probe proved nothing; hand it back
        if current == "closed" and outcome == "failure" and await self._should_open(conn, provider, now - self._window):
            return ("open", now + self.open_seconds(opens + 1), opens + 1, None)
        # open: the timer decides; disabled: only a moderator does
        return None

    async def _should_open(self, conn: Connection, provider: str, since: float) -> bool:
        async with conn.execute(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN ok = 0 THEN 1 ELSE 0 END), 0) AS BIGINT)"
            " FROM provider_events WHERE provider = ? AND at >= ?",
            (provider, since),
        ) as cursor:
            total, failures = await cursor.fetchone() or (0, 0)
        if failures >= self._min_failures and failures >= self._ratio * total:
            return True
        async with conn.execute(
            "SELECT ok FROM provider_events WHERE provider = ? AND phase = 'submit' AND at >= ?"
            " ORDER BY at DESC, id DESC LIMIT ?",
            (provider, since, self._consecutive),
        ) as cursor:
            last = [r[0] for r in await cursor.fetchall()]
        return len(last) == self._consecutive and not any(last)

    # --- moderators ---------------------------------------------------------------------------

    async def enable(self, actor: Actor, provider: str) -> BreakerState:
        """Close `provider`'s breaker (disabled or open) as a moderator of a guild that uses it."""
        guild_id = await self._guilds.require_moderator(actor)
        if self._configured is not None and provider not in self._configured:
            available = ", ".join(f"`{n}`" for n in sorted(self._configured)) or "—"
            raise ProviderNotAllowed(Exclusion(provider, "route.not_configured", {"available": available}))
        settings = await self._guilds.get(guild_id)
        if settings.providers is not None and provider not in settings.providers:
            raise ProviderNotAllowed(Exclusion(provider, "route.enable_not_used"))
        now = self._clock()
        async with self._db.transaction() as conn:
            row = await _row(conn, provider)
            await _save(conn, provider, now, "closed", None, 0, None)
        log.info(
            "provider %s re-enabled by user %s of guild %s (was %s%s)",
            provider,
            actor.user_id,
            guild_id,
            row["state"] if row else "closed",
            f": {row['disabled_reason']}" if row and row["disabled_reason"] else "",
        )
        return await self.state(provider)


async def _row(conn: Connection, provider: str) -> Row | None:
    async with conn.execute(
        "SELECT state, open_until, open_count, disabled_reason, updated_at FROM provider_health WHERE provider = ?",
        (provider,),
    ) as cursor:
        row: Row | None = await cursor.fetchone()
    return row


async def _save(
    conn: Connection,
    provider: str,
    now: float,
    state: str,
    open_until: float | None,
    open_count: int,
    reason: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO provider_health (provider, state, open_until, open_count, probe_job_id, disabled_reason,"
        " updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)"
        " ON CONFLICT (provider) DO UPDATE SET state = excluded.state, open_until = excluded.open_until,"
        " open_count = excluded.open_count, probe_job_id = NULL, disabled_reason = excluded.disabled_reason,"
        " updated_at = excluded.updated_at",
        (provider, state, open_until, open_count, reason, now),
    )
    if state == "closed":
        # a recovered provider starts clean: failures from before must not re-open it at once
        await conn.execute("DELETE FROM provider_events WHERE provider = ?", (provider,))
