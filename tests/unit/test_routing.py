"""Routing decisions: allowed providers, capabilities, breaker states, priority, explicit requests."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bot.i18n import catalog, t
from bot.providers.base import (
    Ambiguous,
    AuthFailed,
    NotSent,
    Orientation,
    ProviderError,
    Quality,
    QuotaExhausted,
    RateLimited,
    Rejected,
    RejectReason,
    Unavailable,
    VideoProvider,
)
from bot.providers.fal import FalProvider
from bot.providers.kling import KlingProvider
from bot.providers.local import LocalProvider
from bot.providers.openai import OpenAIProvider
from bot.providers.pricing import DEFAULT_PRICES, PriceBook
from bot.providers.relay import RelayProvider
from bot.services.guilds import GuildSettings
from bot.services.routing import (
    BreakerState,
    Candidate,
    NoProviderAvailable,
    ProviderNotAllowed,
    RouteNeeds,
    chain_hold,
    fallback_allowed,
    route,
    typical_request,
)

NOW = 1_790_000_000.0
LAND, STD = Orientation.LANDSCAPE, Quality.STANDARD


def build(client: httpx.AsyncClient, tmp: Path, prices: PriceBook | None = None) -> dict[str, VideoProvider]:
    """The four real adapters in this configured order; routing only reads capabilities and estimates."""
    prices = prices or PriceBook()
    key = SecretStr("test-key-0123456789")
    return {
        "openai": OpenAIProvider(client, api_key=key, base_url="http://127.0.0.1:9/v1", prices=prices),
        "relay": RelayProvider(client, api_key=key, base_url="http://127.0.0.1:9", prices=prices),
        "kling": KlingProvider(client, api_key=key, base_url="http://127.0.0.1:9", prices=prices),
        "local": LocalProvider(work_dir=tmp / "renders"),
    }


@pytest.fixture
def providers(client: httpx.AsyncClient, tmp_path: Path) -> dict[str, VideoProvider]:
    return build(client, tmp_path)


def needs(seconds: int = 8, n: int = 1, refused: frozenset[str] = frozenset(), quality: Quality = STD) -> RouteNeeds:
    return RouteNeeds(seconds, LAND, quality, n, refused)


def guild(providers: tuple[str, ...] | None = None, priority: str = "cost") -> GuildSettings:
    return GuildSettings(guild_id=5, providers=providers, priority=priority)


def names(candidates: list[Candidate]) -> list[str]:
    return [c.name for c in candidates]


def rendered(error: ProviderNotAllowed | NoProviderAvailable) -> str:
    """What the member reads; a missing key or placeholder would show up here."""
    assert error.key in catalog("en")
    return t(error.key, "en", **error.params)


# --- ordering -------------------------------------------------------------------------------------


def test_cost_priority_orders_by_the_estimate_of_the_length_each_would_make(providers) -> None:
    got = route(needs(8), providers, guild(), {}, now=NOW)
    assert names(got) == ["local", "relay", "kling", "openai"]
    by_name = {c.name: c for c in got}
    # 8 s rounds up to the relay's 10 s (flat price); the others make 8 s at their per-second rate
    assert {n: c.seconds for n, c in by_name.items()} == {"local": 8, "relay": 10, "kling": 8, "openai": 8}
    assert by_name["openai"].estimate_micros == 8 * DEFAULT_PRICES["openai:sora-2:1280x720"]
    assert by_name["kling"].estimate_micros == 8 * DEFAULT_PRICES["kling:kling-3.0-omni:720p"]
    assert by_name["relay"].estimate_micros == DEFAULT_PRICES["relay:sora-2:video"]
    assert by_name["local"].estimate_micros == 0
    assert all(c.provider is providers[c.name] for c in got)


def test_estimates_follow_quality_and_the_real_request(providers) -> None:
    pro = route(needs(8, quality=Quality.PRO), providers, guild(("openai",)), {}, now=NOW)
    assert pro[0].estimate_micros == 8 * DEFAULT_PRICES["openai:sora-2-pro:1280x720"]
    # a given request is what gets estimated (here: portrait on the same price line, 12 s)
    request = typical_request(12, Orientation.PORTRAIT, STD, 1, prompt="@a waves")
    got = route(needs(12), providers, guild(("openai",)), {}, request=request, now=NOW)
    assert got[0].estimate_micros == 12 * DEFAULT_PRICES["openai:sora-2:720x1280"]


def test_guild_list_restricts_and_orders_and_skips_unconfigured_names(providers) -> None:
    settings = guild(("kling", "ghost", "openai", "kling"), priority="stability")
    assert names(route(needs(), providers, settings, {}, now=NOW)) == ["kling", "openai"]
    # cost still decides first under the cost priority, whatever the guild order
    assert names(route(needs(), providers, guild(("openai", "kling")), {}, now=NOW)) == ["kling", "openai"]


def test_stability_puts_closed_first_then_fewer_recent_failures(providers) -> None:
    states = {
        "openai": BreakerState("openai", recent_failures=0),
        "relay": BreakerState("relay", "open", open_until=NOW - 1),  # pause over: would be the probe
        "kling": BreakerState("kling", recent_failures=3, recent_events=10),
        "local": BreakerState("local", recent_failures=1, recent_events=10),
    }
    got = route(needs(), providers, guild(priority="stability"), states, now=NOW)
    assert names(got) == ["openai", "local", "kling", "relay"]


def test_cost_ties_prefer_a_closed_breaker(client, tmp_path) -> None:
    prices = PriceBook({**DEFAULT_PRICES, "kling:kling-3.0-omni:720p": 100_000})  # = openai per second
    providers = build(client, tmp_path, prices)
    settings = guild(("openai", "kling"))
    assert names(route(needs(), providers, settings, {}, now=NOW)) == ["openai", "kling"]
    probing = {"openai": BreakerState("openai", "half_open", probe_in_flight=False)}
    assert names(route(needs(), providers, settings, probing, now=NOW)) == ["kling", "openai"]


# --- filtering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "n", "expected"),
    [
        (2, 0, ["local", "relay", "kling", "openai"]),  # short asks round up everywhere
        (13, 1, ["relay", "kling", "openai"]),  # local stops at 12 s
        (16, 1, ["openai"]),  # only openai makes more than 15 s
        (20, 2, ["openai"]),
        (8, 3, ["local", "relay", "kling"]),  # openai takes at most 2 characters
        (8, 5, ["kling"]),  # local 4, relay 3
        (8, 7, ["kling"]),
    ],
)
def test_capabilities_filter(providers, seconds: int, n: int, expected: list[str]) -> None:
    assert names(route(needs(seconds, n), providers, guild(), {}, now=NOW)) == expected


def test_providers_a_character_refuses_are_skipped(providers) -> None:
    got = route(needs(refused=frozenset({"local", "relay"})), providers, guild(), {}, now=NOW)
    assert names(got) == ["kling", "openai"]


def test_breaker_states_filter_but_an_expired_pause_stays(providers) -> None:
    states = {
        "local": BreakerState("local", "disabled", reason="key revoked"),
        "relay": BreakerState("relay", "open", open_until=NOW + 30),
        "kling": BreakerState("kling", "half_open", probe_in_flight=True),
        "openai": BreakerState("openai", "open", open_until=NOW),
    }
    assert names(route(needs(), providers, guild(), states, now=NOW)) == ["openai"]
    # the probe of a crashed job is no longer in flight: kling may be probed again
    states["kling"] = BreakerState("kling", "half_open", probe_in_flight=False)
    assert names(route(needs(), providers, guild(), states, now=NOW)) == ["kling", "openai"]
    # half a minute later the relay's pause is over too
    assert names(route(needs(), providers, guild(), states, now=NOW + 30)) == ["relay", "kling", "openai"]


def test_a_provider_without_a_price_is_never_routed_to(client, tmp_path) -> None:
    prices = PriceBook({k: v for k, v in DEFAULT_PRICES.items() if not k.startswith("openai:sora-2:")})
    providers = build(client, tmp_path, prices)
    assert names(route(needs(), providers, guild(("openai", "kling")), {}, now=NOW)) == ["kling"]
    with pytest.raises(NoProviderAvailable) as info:
        route(needs(), providers, guild(), {}, "openai", now=NOW)
    assert info.value.key == "route.no_price"


def test_nothing_left_lists_every_reason(providers) -> None:
    states = {"kling": BreakerState("kling", "disabled", reason="the Kling account has no balance left (1102)")}
    with pytest.raises(NoProviderAvailable) as info:
        route(needs(16, 3), providers, guild(("openai", "kling", "ghost")), states, now=NOW)
    error = info.value
    assert error.key == "route.none_available"
    assert [(e.provider, e.key) for e in error.exclusions] == [
        ("ghost", "route.not_configured"),
        ("openai", "route.too_many_characters"),
        ("kling", "route.too_long"),
    ]
    text = rendered(error)
    assert "`openai` can put at most 2 characters in one video; your prompt has 3." in text
    assert "`kling` makes videos of at most 15 seconds; you asked for 16." in text
    assert "`ghost` isn't set up on this bot" in text
    # a German member reads every reason in German, not only the header
    german = t(error.key, "de", **error.params)
    assert "`openai` kann höchstens 2 Charaktere in ein Video bringen; dein Prompt hat 3." in german
    assert "`kling` macht Videos von höchstens 15 Sekunden; du hast 16 angefragt." in german
    assert "`ghost` ist bei diesem Bot nicht eingerichtet" in german


def test_a_lone_reason_is_raised_as_itself(providers) -> None:
    states = {"kling": BreakerState("kling", "open", open_until=NOW + 59.5)}
    with pytest.raises(NoProviderAvailable) as info:
        route(needs(), providers, guild(("kling",)), states, now=NOW)
    assert info.value.key == "route.paused"
    assert f"<t:{int(NOW) + 60}:R>" in rendered(info.value)


# --- the member's explicit provider ---------------------------------------------------------------


def test_requested_provider_is_the_only_candidate_even_when_dearer(providers) -> None:
    got = route(needs(), providers, guild(), {}, "openai", now=NOW)
    assert names(got) == ["openai"]
    assert got[0].estimate_micros == 800_000


@pytest.mark.parametrize(
    ("requested", "settings", "key", "shown"),
    [
        ("veo", guild(), "route.not_configured", "`veo` isn't set up on this bot. Available: `openai`, `relay`"),
        ("relay", guild(("kling", "local")), "route.not_allowed", "It allows: `kling`, `local`."),
    ],
)
def test_requested_provider_not_allowed(providers, requested, settings, key, shown) -> None:
    with pytest.raises(ProviderNotAllowed) as info:
        route(needs(), providers, settings, {}, requested, now=NOW)
    assert info.value.key == key
    assert shown in rendered(info.value)


@pytest.mark.parametrize(
    ("requested", "route_needs", "states", "key", "shown"),
    [
        ("openai", needs(8, 3), {}, "route.too_many_characters", "at most 2 characters"),
        ("relay", needs(20), {}, "route.too_long", "at most 15 seconds; you asked for 20"),
        ("kling", needs(refused=frozenset({"kling"})), {}, "route.refused", "`kling` refused a character"),
        (
            "kling",
            needs(),
            {"kling": BreakerState("kling", "disabled", reason="bad key (1002)")},
            "route.disabled",
            "turned off until a moderator turns it back on: bad key (1002)",
        ),
        ("kling", needs(), {"kling": BreakerState("kling", "half_open", probe_in_flight=True)}, "route.probing", ""),
    ],
)
def test_requested_provider_that_cannot_run_says_why(providers, requested, route_needs, states, key, shown) -> None:
    with pytest.raises(NoProviderAvailable) as info:
        route(route_needs, providers, guild(), states, requested, now=NOW)
    assert info.value.key == key
    assert f"`{requested}`" in rendered(info.value)
    assert shown in rendered(info.value)


# --- fallback and the hold ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "allowed"),
    [
        (NotSent("p", "connect error"), True),
        (Unavailable("p", "503"), True),
        (RateLimited("p", "429", retry_after=2), True),
        (AuthFailed("p", "bad key"), True),
        (QuotaExhausted("p", "no balance"), True),
        (Rejected("p", "model gone", reason=RejectReason.UNSUPPORTED), True),
        (Rejected("p", "blocked", reason=RejectReason.MODERATION), False),
        (Rejected("p", "bad request", reason=RejectReason.INVALID), False),
        (Ambiguous("p", "read timeout"), False),
        (ProviderError("p", "unclassified"), False),
    ],
)
def test_fallback_only_after_a_safe_outcome(error: ProviderError, allowed: bool) -> None:
    assert fallback_allowed(error) is allowed


def test_chain_hold_is_the_dearest_hop_with_fallback_else_the_first(providers) -> None:
    chain = route(needs(), providers, guild(("relay", "kling", "openai")), {}, now=NOW)
    assert [c.estimate_micros for c in chain] == [120_000, 672_000, 800_000]
    assert chain_hold(chain, fallback=True) == 800_000
    assert chain_hold(chain, fallback=False) == 120_000
    assert chain_hold([], fallback=True) == 0


def test_an_engine_that_needs_a_character_is_skipped_for_a_prompt_without_one(client, tmp_path) -> None:
    providers = build(client, tmp_path)
    fal = FalProvider(
        client,
        api_key=SecretStr("fal-key-0123456789"),
        queue_url="http://127.0.0.1:9",
        rest_url="http://127.0.0.1:9",
        cdn_url="http://127.0.0.1:9",
        prices=PriceBook(),
        model="wan/v2.6/reference-to-video",
    )
    assert fal.capabilities.min_characters == 1
    providers["fal"] = fal
    assert "fal" in names(route(needs(5, 1), providers, guild(), {}, now=NOW))
    assert "fal" not in names(route(needs(5, 0), providers, guild(), {}, now=NOW))
    with pytest.raises(NoProviderAvailable) as info:
        route(needs(5, 0), providers, guild(), {}, "fal", now=NOW)
    assert info.value.key == "route.needs_character"
    assert rendered(info.value) == "`fal` makes videos from your characters: write at least 1 @name in the prompt."
