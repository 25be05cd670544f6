"""Period keys at boundaries and in non-UTC guild timezones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain.periods import UnknownTimezone, period_keys


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_utc_keys_around_midnight_and_month_end() -> None:
    before = period_keys(ts(2026, 11, 30, 23, 59, 59))
    after = period_keys(ts(2026, 12, 1, 0, 0, 5))
    assert (before.guild_month, before.member_day) == ("2026-11", "2026-11-30")
    assert (after.guild_month, after.member_day) == ("2026-12", "2026-12-01")
    assert after.global_month == "2026-12"


def test_guild_timezone_moves_the_day_but_not_the_operator_month() -> None:
    # 2026-12-01 03:00 UTC is still 2026-11-30 in New York
    keys = period_keys(ts(2026, 12, 1, 3, 0, 0), "America/New_York")
    assert keys.member_day == "2026-11-30"
    assert keys.guild_month == "2026-11"
    assert keys.global_month == "2026-12"
    # and already the next day in Tokyo
    assert period_keys(ts(2026, 11, 22, 16, 0, 0), "Asia/Tokyo").member_day == "2026-11-23"


def test_unknown_timezone_is_refused() -> None:
    with pytest.raises(UnknownTimezone):
        period_keys(ts(2026, 11, 22), "Mars/Olympus_Mons")
