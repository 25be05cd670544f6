"""The breaker fed by real adapters talking to the loopback provider simulators."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bot.config import Settings
from bot.db import Database
from bot.providers.base import (
    GenerationRequest,
    Orientation,
    ProviderError,
    Quality,
    QuotaExhausted,
    Unavailable,
    VideoProvider,
)
from bot.providers.kling import KlingProvider
from bot.providers.local import LocalProvider
from bot.providers.openai import OpenAIProvider
from bot.providers.pricing import PriceBook
from bot.services.about import AboutService
from bot.services.actors import Actor
from bot.services.guilds import GuildService, GuildSettings
from bot.services.health import HealthService
from bot.services.routing import NoProviderAvailable, RouteNeeds, fallback_allowed, route
from bot.ui.about import about_embed
from tests.conftest import Simulators
from tests.fakes.kling_sim import KlingSim
from tests.fakes.openai_sim import Fault, OpenAISim

KLING_KEY = "api-key-kling-breaker-7d1e"
OPENAI_KEY = "sk-proj-BREAKER-4c2a9e"
START = 1_790_000_000.0
TIMEOUT = httpx.Timeout(2.0)
REQUEST = GenerationRequest(
    prompt="a lighthouse at dusk", seconds=8, orientation=Orientation.LANDSCAPE, quality=Quality.STANDARD
)
NEEDS = RouteNeeds(8, Orientation.LANDSCAPE, Quality.STANDARD, 0)
ADMIN = Actor(user_id=1, guild_id=5, manage_guild=True)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def kling_sim(sims: Simulators) -> KlingSim:
    return await sims.start(KlingSim(api_key=KLING_KEY, element_seconds=0.05, video_seconds=0.2))


@pytest.fixture
async def openai_sim(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=OPENAI_KEY, job_seconds=0.2))


@pytest.fixture
def providers(
    client: httpx.AsyncClient, kling_sim: KlingSim, openai_sim: OpenAISim, tmp_path: Path
) -> dict[str, VideoProvider]:
    prices = PriceBook()
    return {
        "openai": OpenAIProvider(
            client, api_key=SecretStr(OPENAI_KEY), base_url=openai_sim.base_url, prices=prices, timeout=TIMEOUT
        ),
        "kling": KlingProvider(
            client, api_key=SecretStr(KLING_KEY), base_url=kling_sim.base_url, prices=prices, timeout=TIMEOUT
        ),
        "local": LocalProvider(work_dir=tmp_path / "renders"),
    }


async def submit(health: HealthService, provider: VideoProvider) -> ProviderError | None:
    """What the generation pipeline does per attempt: ask the breaker, send, report the outcome."""
    try:
        await provider.submit(REQUEST)
    except ProviderError as exc:
        await health.record(provider.name, ok=False, error=exc, phase="submit")
        return exc
    await health.record(provider.name, ok=True, error=None, phase="submit")
    return None


async def provider_lines(db: Database, providers: dict[str, VideoProvider], health: HealthService) -> dict[str, str]:
    settings = Settings(_env_file=None, providers="openai,kling,local")
    info = await AboutService(settings, db, providers, health, clock=health._clock).about()
    field = next(f for f in about_embed(info, "en").fields if f.name == "Providers")
    assert field.value is not None
    return {line.split("**")[1].split(" ")[0]: line for line in field.value.splitlines()}


async def test_kling_out_of_balance_is_disabled_until_a_moderator_enables_it(
    db: Database, kling_sim: KlingSim, providers: dict[str, VideoProvider]
) -> None:
    clock = Clock()
    health = HealthService(db, clock, guilds=GuildService(db, clock), configured=providers)
    kling = providers["kling"]
    kling_sim.add_fault("create", http=429, code=1102, message="resource pack exhausted")

    assert await health.allow("kling")
    error = await submit(health, kling)
    assert isinstance(error, QuotaExhausted)
    assert fallback_allowed(error)  # nothing was created: the next provider may run the job

    state = await health.state("kling")
    assert state.state == "disabled"
    assert state.reason == "the Kling account has no balance or resource pack left (1102)"
    assert KLING_KEY not in state.reason
    clock.now += 7 * 24 * 3600
    assert not await health.allow("kling")

    guild = GuildSettings(guild_id=5, providers=("kling", "openai"))
    states = await health.states(providers)
    assert [c.name for c in route(NEEDS, providers, guild, states, now=clock.now)] == ["openai"]
    with pytest.raises(NoProviderAvailable) as info:
        route(NEEDS, providers, guild, states, "kling", now=clock.now)
    assert info.value.key == "route.disabled"

    lines = await provider_lines(db, providers, health)
    assert lines["kling"] == (
        "**kling (`kling-3.0-omni`)**: disabled: the Kling account has no balance or resource pack left (1102). "
        "A moderator can turn it back on with `/settings enable_provider`. · $0.672 per typical video"
    )

    # the balance is topped up; a moderator turns it back on and the next job goes through
    await health.enable(ADMIN, "kling")
    assert await health.allow("kling")
    assert await submit(health, kling) is None
    assert (await health.state("kling")).state == "closed"
    assert len(kling_sim.recorded("POST", "/omni-video/")) == 2


async def test_openai_503s_open_the_breaker_then_one_probe_closes_it(
    db: Database, openai_sim: OpenAISim, providers: dict[str, VideoProvider]
) -> None:
    clock = Clock()
    health = HealthService(db, clock, guilds=GuildService(db, clock))
    openai = providers["openai"]
    openai_sim.script("create", Fault.UNAVAILABLE, times=3)

    for _ in range(3):
        assert await health.allow("openai")
        assert isinstance(await submit(health, openai), Unavailable)
    state = await health.state("openai")
    assert (state.state, state.open_until) == ("open", START + 60)
    assert not await health.allow("openai")
    assert len(openai_sim.creates()) == 3

    guild = GuildSettings(guild_id=5, providers=("openai", "local"))
    states = await health.states(providers)
    assert [c.name for c in route(NEEDS, providers, guild, states, now=clock.now)] == ["local"]
    lines = await provider_lines(db, providers, health)
    assert lines["openai"].startswith(
        f"**openai (`sora-2`)**: paused after repeated failures until <t:{int(START) + 60}:t>"
    )
    assert lines["openai"].endswith("· $0.80 per typical video")
    assert lines["local"] == "**local**: healthy · offline, free"

    # the pause is over: routing offers openai again, and of many concurrent jobs only one probes
    clock.now += 60
    states = await health.states(providers)
    assert "openai" in [c.name for c in route(NEEDS, providers, guild, states, now=clock.now)]
    granted = await asyncio.gather(*(health.allow("openai") for _ in range(8)))
    assert granted.count(True) == 1
    assert "testing recovery" in (await provider_lines(db, providers, health))["openai"]

    assert await submit(health, openai) is None  # the simulator is healthy again
    assert (await health.state("openai")).state == "closed"
    assert await health.allow("openai")
    assert len(openai_sim.creates()) == 4
    assert (await provider_lines(db, providers, health))[
        "openai"
    ] == "**openai (`sora-2`)**: healthy · $0.80 per typical video"
