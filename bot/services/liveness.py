"""What `/healthz` asks of the services (bot/web/server.py), and the scrape-time reads of `/metrics`.

The gateway is the web layer's to judge (it sees the Discord client); the database and the
tracking loop are judged here, in plain Python.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.db import Database
from bot.services.health import HealthService
from bot.services.metrics import Metrics
from bot.services.tracking import Tracker

# A health check answers within about this long, whatever holds the database.
DB_PROBE_SECONDS = 0.5
# The tracking loop sleeps at most POLL_MAX between passes: it is stale after a few of them.
STALE_PASSES = 4
STALE_FLOOR_SECONDS = 30.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class LivenessService:
    def __init__(
        self,
        db: Database,
        tracker: Tracker,
        health: HealthService,
        configured: tuple[str, ...],
        *,
        poll_max: float,
        started_at: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._tracker = tracker
        self._health = health
        self._configured = configured
        self._clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.stale_after = max(STALE_PASSES * poll_max, STALE_FLOOR_SECONDS)

    async def database(self) -> Check:
        """The database takes a small write within DB_PROBE_SECONDS."""
        try:
            await self._db.probe_write(DB_PROBE_SECONDS)
        except (sqlite3.Error, OSError, TimeoutError) as exc:
            return Check(False, f"no write: {exc or type(exc).__name__}")
        return Check(True, "ok")

    def tracking(self) -> Check:
        """The tracking loop finished a pass within the last few POLL_MAX (counted from the start
        while it has not run yet: the loop waits for the gateway)."""
        last = self._tracker.last_pass_at
        since = self._clock() - (self.started_at if last is None else last)
        if since > self.stale_after:
            what = "no pass yet" if last is None else f"last pass {since:.0f} s ago"
            return Check(False, f"{what} (stale after {self.stale_after:.0f} s)")
        return Check(True, "ok" if last is not None else "starting")

    async def refresh_metrics(self, metrics: Metrics) -> None:
        """The gauges read at scrape: jobs by state and provider, the ledger's totals, breakers."""
        rows = await self._db.fetchall(
            "SELECT state, COALESCE(provider, '') AS provider, COUNT(*) AS n FROM jobs GROUP BY state, provider"
        )
        metrics.set_jobs((r["state"], r["provider"], int(r["n"])) for r in rows)
        ledger = await self._db.fetchall(
            "SELECT kind, CAST(SUM(amount_micros) AS BIGINT) AS total FROM ledger GROUP BY kind"
        )
        metrics.set_ledger({r["kind"]: int(r["total"] or 0) for r in ledger})
        states = await self._health.states(self._configured)
        metrics.set_breakers({name: state.state for name, state in states.items()})
