"""Provider breaker state rows."""

from __future__ import annotations

from dataclasses import dataclass

from bot.db import Database


@dataclass(frozen=True)
class HealthRow:
    provider: str
    state: str
    open_until: float | None
    disabled_reason: str | None


async def all_health(db: Database) -> dict[str, HealthRow]:
    rows = await db.fetchall("SELECT provider, state, open_until, disabled_reason FROM provider_health")
    return {r["provider"]: HealthRow(r["provider"], r["state"], r["open_until"], r["disabled_reason"]) for r in rows}
