"""The per-provider circuit breaker, on a real SQLite file with an injected clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.db import Database
from bot.errors import GuildOnly, NotModerator
from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    NotSent,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Rejected,
    RejectReason,
    Unavailable,
)
from bot.services.actors import Actor
from bot.services.guilds import GuildService
from bot.services.health import HealthService, classify
from bot.services.routing import ProviderNotAllowed

START = 1_790_000_000.0
P = "openai"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(db: Database, clock: Clock) -> HealthService:
    return HealthService(db, clock, guilds=GuildService(db, clock))


def down() -> Unavailable:
    return Unavailable(P, "the provider is overloaded or unavailable", code="503")


async def fail(health: HealthService, times: int = 1, phase: str = "submit", provider: str = P) -> None:
    for _ in range(times):
        await health.record(provider, ok=False, error=down(), phase=phase)


async def succeed(health: HealthService, times: int = 1, phase: str = "poll") -> None:
    for _ in range(times):
        await health.record(P, ok=True, error=None, phase=phase)


async def events(db: Database, provider: str = P) -> list[tuple[str, int]]:
    rows = await db.fetchall("SELECT phase, ok FROM provider_events WHERE provider = ? ORDER BY id", (provider,))
    return [(r["phase"], r["ok"]) for r in rows]


async def open_breaker(health: HealthService) -> None:
    await fail(health, 3)
    assert (await health.state(P)).state == "open"


# --- classification -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "error", "outcome"),
    [
        (True, None, "success"),
        (False, AuthFailed(P, "bad key"), "disable"),
        (False, QuotaExhausted(P, "no balance"), "disable"),
        (False, RateLimited(P, "429"), "neutral"),
        (False, Rejected(P, "blocked", reason=RejectReason.MODERATION), "neutral"),
        (False, Rejected(P, "bad", reason=RejectReason.INVALID), "neutral"),
        (False, Rejected(P, "cannot", reason=RejectReason.UNSUPPORTED), "neutral"),
        (False, NotSent(P, "connect error"), "failure"),
        (False, Unavailable(P, "503"), "failure"),
        (False, Ambiguous(P, "read timeout"), "failure"),
        (False, ProviderError(P, "odd"), "failure"),
        (False, None, "failure"),
    ],
)
def test_classify(ok: bool, error: ProviderError | None, outcome: str) -> None:
    assert classify(ok, error) == outcome


# --- opening --------------------------------------------------------------------------------------


async def test_unknown_provider_is_closed_and_allowed(health: HealthService) -> None:
    state = await health.state("kling")
    assert (state.state, state.open_until, state.reason, state.probe_in_flight) == ("closed", None, None, False)
    assert await health.allow("kling")


async def test_three_consecutive_submit_failures_open_for_a_minute(health: HealthService, db: Database) -> None:
    await fail(health, 2)
    assert (await health.state(P)).state == "closed"
    await fail(health)
    state = await health.state(P)
    assert state.state == "open"
    assert state.open_until == START + 60
    assert (state.recent_failures, state.recent_events) == (3, 3)
    assert not await health.allow(P)
    assert await events(db) == [("submit", 0)] * 3
    # other providers are unaffected
    assert await health.allow("kling")


async def test_a_success_between_submit_failures_breaks_the_run(health: HealthService) -> None:
    await fail(health, 2)
    await succeed(health, phase="submit")
    await fail(health, 2)
    assert (await health.state(P)).state == "closed"


async def test_failure_ratio_opens_at_five_failures_and_half(health: HealthService) -> None:
    # poll failures never make a consecutive-submit run, so only the ratio rule applies
    await succeed(health, 6)
    await fail(health, 5, phase="poll")
    assert (await health.state(P)).state == "closed"  # 5 of 11 < 50 %
    await fail(health, 1, phase="outcome")
    assert (await health.state(P)).state == "open"  # 6 of 12


async def test_four_failures_never_open_on_the_ratio(health: HealthService) -> None:
    await fail(health, 4, phase="poll")
    assert (await health.state(P)).state == "closed"
    await fail(health, 1, phase="poll")
    assert (await health.state(P)).state == "open"


async def test_rate_limits_and_rejections_are_not_failures(health: HealthService, db: Database) -> None:
    for _ in range(6):
        await health.record(P, ok=False, error=RateLimited(P, "429", retry_after=1), phase="submit")
        await health.record(P, ok=False, error=Rejected(P, "blocked", reason=RejectReason.MODERATION), phase="submit")
        await health.record(P, ok=False, error=Rejected(P, "bad", reason=RejectReason.INVALID), phase="submit")
    assert (await health.state(P)).state == "closed"
    assert await events(db) == []
    # ...and they do not interrupt a run of real failures either
    await fail(health, 2)
    await health.record(P, ok=False, error=RateLimited(P, "429"), phase="submit")
    await fail(health)
    assert (await health.state(P)).state == "open"


async def test_old_failures_leave_the_window_and_are_pruned(health: HealthService, clock: Clock, db: Database) -> None:
    await fail(health, 2)
    clock.advance(601)
    await fail(health)
    assert (await health.state(P)).state == "closed"
    assert await events(db) == [("submit", 0)]


async def test_unknown_phase_is_a_programming_error(health: HealthService) -> None:
    with pytest.raises(ValueError, match="phase"):
        await health.record(P, ok=True, error=None, phase="download")


# --- half-open ------------------------------------------------------------------------------------


async def test_exactly_one_concurrent_caller_gets_the_probe(health: HealthService, clock: Clock) -> None:
    await open_breaker(health)
    clock.advance(59.9)
    assert not any(await asyncio.gather(*(health.allow(P) for _ in range(5))))
    clock.advance(0.1)
    granted = await asyncio.gather(*(health.allow(P) for _ in range(12)))
    assert granted.count(True) == 1
    state = await health.state(P)
    assert (state.state, state.probe_in_flight) == ("half_open", True)
    # a second service over the same database agrees: the probe is taken
    assert not await HealthService(health._db, clock, guilds=GuildService(health._db, clock)).allow(P)


async def test_probe_success_closes_and_resets_the_backoff(health: HealthService, clock: Clock) -> None:
    await open_breaker(health)
    clock.advance(60)
    assert await health.allow(P)
    await succeed(health, phase="submit")
    state = await health.state(P)
    assert (state.state, state.open_until, state.probe_in_flight) == ("closed", None, False)
    assert await health.allow(P) and await health.allow(P)
    # the failures from before the recovery are forgotten, and the next pause is a minute again
    await fail(health, 2)
    assert (await health.state(P)).state == "closed"
    await fail(health)
    assert (await health.state(P)).open_until == clock.now + 60


async def test_probe_failure_reopens_for_twice_as_long_up_to_fifteen_minutes(
    health: HealthService, clock: Clock
) -> None:
    await open_breaker(health)
    pauses = []
    for _ in range(6):
        clock.advance(1000)
        assert await health.allow(P)
        await fail(health, phase="poll")
        state = await health.state(P)
        assert state.state == "open"
        assert state.open_until is not None
        pauses.append(state.open_until - clock.now)
    assert pauses == [120, 240, 480, 900, 900, 900]


async def test_a_neutral_probe_outcome_hands_the_probe_back(health: HealthService, clock: Clock) -> None:
    await open_breaker(health)
    clock.advance(60)
    assert await health.allow(P)
    await health.record(P, ok=False, error=RateLimited(P, "429"), phase="submit")
    assert await health.allow(P)
    assert not await health.allow(P)
    await health.release_probe(P)  # granted, never sent
    assert await health.allow(P)
    await fail(health)
    assert (await health.state(P)).open_until == clock.now + 120  # the backoff still doubled once


async def test_a_probe_nobody_reports_on_is_handed_out_again(health: HealthService, clock: Clock) -> None:
    await open_breaker(health)
    clock.advance(60)
    assert await health.allow(P)
    clock.advance(599)
    assert not await health.allow(P)
    assert (await health.state(P)).probe_in_flight
    clock.advance(1)
    assert not (await health.state(P)).probe_in_flight
    assert await health.allow(P)
    assert not await health.allow(P)


# --- disabled and re-enabling ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (AuthFailed(P, "the provider refused the API key (HTTP 401)", code="invalid_api_key"), "(invalid_api_key)"),
        (QuotaExhausted(P, "the provider account has no quota or balance left"), "no quota or balance left"),
    ],
)
async def test_auth_and_balance_errors_disable_until_a_moderator_acts(
    health: HealthService, clock: Clock, error: ProviderError, reason: str
) -> None:
    await health.record(P, ok=False, error=error, phase="submit")
    state = await health.state(P)
    assert state.state == "disabled"
    assert state.reason is not None and reason in state.reason
    assert state.reason.startswith(error.message)
    clock.advance(10 * 24 * 3600)
    assert not await health.allow(P)
    # later outcomes (jobs that were already running) do not re-open or close it
    await succeed(health, 3)
    await fail(health, 5)
    assert (await health.state(P)).state == "disabled"


async def test_only_a_moderator_of_a_guild_using_it_may_enable(db: Database, clock: Clock) -> None:
    guilds = GuildService(db, clock)
    health = HealthService(db, clock, guilds=guilds, configured=("openai", "kling"))
    await health.record(P, ok=False, error=AuthFailed(P, "bad key"), phase="submit")
    member = Actor(user_id=2, guild_id=5)
    with pytest.raises(NotModerator):
        await health.enable(member, P)
    with pytest.raises(GuildOnly):
        await health.enable(Actor(user_id=1, guild_id=None, manage_guild=True), P)
    # a guild that routes only to kling has no say over openai
    await guilds.update(Actor(user_id=9, guild_id=6, manage_guild=True), providers=("kling",))
    with pytest.raises(ProviderNotAllowed) as info:
        await health.enable(Actor(user_id=9, guild_id=6, manage_guild=True), P)
    assert info.value.key == "route.enable_not_used"
    with pytest.raises(ProviderNotAllowed) as info:
        await health.enable(Actor(user_id=1, guild_id=5, manage_guild=True), "relay")
    assert info.value.key == "route.not_configured"
    assert (await health.state(P)).state == "disabled"
    # the guild's moderator role is enough
    await guilds.update(Actor(user_id=1, guild_id=5, manage_guild=True), moderator_role_id=77)
    state = await health.enable(Actor(user_id=2, guild_id=5, role_ids=frozenset({77})), P)
    assert (state.state, state.reason) == ("closed", None)
    assert await health.allow(P)


async def test_enable_also_ends_a_pause_and_forgets_old_failures(health: HealthService) -> None:
    await open_breaker(health)
    admin = Actor(user_id=1, guild_id=5, manage_guild=True)
    assert (await health.enable(admin, P)).state == "closed"
    assert await health.allow(P)
    await fail(health, 2)
    assert (await health.state(P)).state == "closed"


# --- persistence ----------------------------------------------------------------------------------


async def test_state_survives_reopening_the_database(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "restart.sqlite3"
    first = await Database.open(path)
    await first.migrate()
    health = HealthService(first, clock, guilds=GuildService(first, clock))
    await fail(health, 3)
    await health.record("kling", ok=False, error=QuotaExhausted("kling", "no balance", code="1102"), phase="submit")
    await first.close()

    second = await Database.open(path)
    try:
        await second.migrate()
        again = HealthService(second, clock, guilds=GuildService(second, clock))
        states = await again.states(["openai", "kling", "local"])
        assert states["openai"].state == "open"
        assert states["openai"].open_until == START + 60
        assert states["openai"].recent_failures == 3
        assert (states["kling"].state, states["kling"].reason) == ("disabled", "no balance (1102)")
        assert states["local"].state == "closed"
        assert not await again.allow("openai")
        clock.advance(60)
        assert await again.allow("openai")
        # the backoff count survived too: a failed probe doubles the pause
        await fail(again, phase="poll")
        assert (await again.state("openai")).open_until == clock.now + 120
    finally:
        await second.close()


async def test_states_lists_stored_and_asked_for_providers(health: HealthService) -> None:
    await fail(health, 1, provider="kling")
    await fail(health, 3)
    states = await health.states(["local"])
    assert set(states) == {"local", "openai"}  # kling has events but no breaker row yet
    with_kling = await health.states(["kling"])
    assert (with_kling["kling"].state, with_kling["kling"].recent_failures) == ("closed", 1)
