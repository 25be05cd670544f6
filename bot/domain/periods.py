"""Budget period keys, computed in the guild's timezone at admission time.

Counters are keyed by period (`2026-11`, `2026-11-22`) and created lazily, so nothing ever has to
"reset" a budget. A job stores the keys it was admitted under, so a capture after midnight still
lands in the period that held the money.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


class UnknownTimezone(ValueError):
    pass


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimezone(name) from exc


def is_timezone(name: str) -> bool:
    return name in available_timezones()


@dataclass(frozen=True)
class PeriodKeys:
    global_month: str  # the operator's cap runs on UTC months
    guild_month: str
    member_day: str


def period_keys(now: float, guild_timezone: str = "UTC") -> PeriodKeys:
    utc = datetime.fromtimestamp(now, tz=UTC)
    local = utc.astimezone(zone(guild_timezone))
    return PeriodKeys(
        global_month=utc.strftime("%Y-%m"),
        guild_month=local.strftime("%Y-%m"),
        member_day=local.strftime("%Y-%m-%d"),
    )
