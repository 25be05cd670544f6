"""GenerationService dispatch with fallback: the real services (bot.app.build_services), real
adapters, the relay and openai simulators over loopback HTTP and real SQLite, no Discord.

Covers the paths the end-to-end tests cannot reach by timing alone: a provider whose breaker
opened, or that was turned off, between a job's admission and its dispatch; and a character
that cannot be registered on the relay (no reachable clip URL) while openai takes it from the
bot's stored clip.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bot.app import Services, build_services
from bot.config import Settings
from bot.db import Database
from bot.domain.job_state import JobState
from bot.providers.base import QuotaExhausted, Unavailable, VideoProvider
from bot.providers.registry import build_providers
from bot.services.actors import Actor
from bot.services.characters.handles import unexpired
from bot.services.characters.values import Upload
from bot.services.generation import GenerateCommand, RouteStep
from bot.ui.generation import route_notes
from discord_sandbox.clips import make_clip
from tests.conftest import Simulators
from tests.fakes.openai_sim import OpenAISim
from tests.fakes.relay_sim import Fault as RelayFault
from tests.fakes.relay_sim import RelaySim
from tests.postgres import ENGINES, open_test_database

OPENAI_KEY = "sk-proj-FALLBACK-int-3e8d"
GUILD = 4242
ADMIN = Actor(user_id=1, guild_id=GUILD, manage_guild=True)
MEMBER = Actor(user_id=2, guild_id=GUILD)
MEMBER_IDS = itertools.count(100)


@pytest.fixture
async def relay(sims: Simulators) -> RelaySim:
    return await sims.start(RelaySim(job_seconds=0.2))


@pytest.fixture
async def openai(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=OPENAI_KEY, job_seconds=0.2))


@pytest.fixture
def settings(tmp_path: Path, relay: RelaySim, openai: OpenAISim) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        providers="relay,openai",
        relay_api_key=relay.api_key,
        relay_base_url=relay.base_url,
        openai_api_key=OPENAI_KEY,
        openai_base_url=openai.base_url,
    )


@pytest.fixture(params=ENGINES)
async def db(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Database]:
    async with open_test_database(request.param, request, settings.data_dir) as database:
        yield database


@pytest.fixture
def providers(settings: Settings, client: httpx.AsyncClient) -> dict[str, VideoProvider]:
    return build_providers(settings, client)


@pytest.fixture
async def services(
    settings: Settings, db: Database, client: httpx.AsyncClient, providers: dict[str, VideoProvider]
) -> Services:
    built = build_services(settings, db, client, providers)
    await built.budget.set_limits(ADMIN, "50")
    return built


async def admit(services: Services, prompt: str) -> int:
    # a new member each time: jobs left running here would hit the per-member active-job limit
    actor = Actor(user_id=next(MEMBER_IDS), guild_id=GUILD)
    admitted = await services.generation.admit(
        GenerateCommand(actor=actor, interaction_id=None, channel_id=7, locale="en-US", prompt=prompt)
    )
    return admitted.job.id


async def test_a_provider_paused_after_admission_is_passed_over_and_the_reason_kept(
    services: Services, relay: RelaySim, openai: OpenAISim
) -> None:
    await services.guilds.update(ADMIN, fallback=True)
    job_id = await admit(services, "a lighthouse at dusk")
    assert (await services.generation.job_row(job_id)).providers == ("relay", "openai")
    # other jobs' submits fail meanwhile and the relay's breaker opens
    for _ in range(3):
        await services.health.record("relay", ok=False, error=Unavailable("relay", "overloaded"), phase="submit")
    assert (await services.health.state("relay")).state == "open"

    job = await services.generation.dispatch(job_id)

    assert (job.state, job.provider) in {("queued", "openai"), ("running", "openai")}
    assert relay.calls("create_video") == []  # not even asked
    assert len(openai.creates()) == 1
    history = await services.generation.route_history(job_id)
    assert history[0] == RouteStep("relay", "not_sent", "Rejected", "paused after repeated failures")
    assert (history[1].provider, history[1].outcome) == ("openai", "accepted")
    notes = route_notes(replace(job, state=JobState.DELIVERED), history, "en-US")
    assert notes == ["It ran on openai because relay couldn't take it (paused after repeated failures)."]


async def test_a_provider_turned_off_after_admission_says_so_and_a_sole_provider_releases_the_hold(
    services: Services, db: Database, relay: RelaySim, openai: OpenAISim
) -> None:
    relay_only_job = await admit(services, "a lighthouse at dusk")  # fallback off: relay only
    await services.guilds.update(ADMIN, fallback=True)
    other_job = await admit(services, "a lighthouse at dawn")  # relay, then openai
    no_balance = QuotaExhausted("relay", "the relay account has no balance or tokens left")
    await services.health.record("relay", ok=False, error=no_balance, phase="submit")

    alone = await services.generation.dispatch(relay_only_job)
    assert alone.state == "rejected"
    assert (
        alone.error == "turned off until a moderator turns it back on (the relay account has no balance or tokens left)"
    )
    assert await ledger(db, relay_only_job) == {"hold": alone.estimate_micros, "release": alone.estimate_micros}

    moved = await services.generation.dispatch(other_job)
    assert moved.provider == "openai"
    history = await services.generation.route_history(other_job)
    assert history[0].provider == "relay" and history[0].error is not None
    assert history[0].error.startswith("turned off until a moderator turns it back on")
    # the moderators were told when it was turned off; a later job does not repeat the warning
    assert not any("Moderators" in n for n in route_notes(moved, history, "en-US"))
    assert relay.calls("create_video") == []
    assert len(openai.creates()) == 1


async def test_a_character_the_relay_cannot_register_runs_on_openai_from_the_stored_clip(
    settings: Settings,
    db: Database,
    client: httpx.AsyncClient,
    providers: dict[str, VideoProvider],
    services: Services,
    relay: RelaySim,
    openai: OpenAISim,
    tmp_path: Path,
) -> None:
    # made while openai was the server's first provider: registered there only
    await services.guilds.update(ADMIN, providers=("openai", "relay"))
    data = make_clip(tmp_path / "mira.mp4", seconds=3.0, size=(320, 180), fps=12, blur=()).read_bytes()
    upload = Upload(relay.host_file(data), "mira.mp4", "video/mp4", len(data))
    created = await services.characters.create_from_upload(MEMBER, name="Mira", upload=upload)
    assert created.registration is not None and created.registration.provider == "openai"
    assert len(openai.characters) == 1 and relay.calls("create_character") == []
    await services.guilds.update(ADMIN, providers=("relay", "openai"), fallback=True)

    # the relay refuses to register it (400): no video was requested, so the job moves on
    relay.fail("create_character", RelayFault.sentinel_block())
    first = await services.generation.dispatch(await admit(services, "@Mira waves"))
    assert first.provider == "openai"
    assert len(relay.calls("create_character")) == 1 and relay.calls("create_video") == []
    history = await services.generation.route_history(first.id)
    assert (history[0].provider, history[0].outcome, history[0].error_class) == ("relay", "not_sent", "Rejected")
    assert len(openai.requests_to("POST", "/v1/videos/characters")) == 1  # openai's handle was reused
    (character_id,) = openai.characters
    assert openai.creates()[0].json["characters"] == [{"id": character_id}]

    # after a restart the upload's URL is not known (it was never stored): the relay is passed
    # over without a request, and openai still has what it needs from the stored clip
    restarted = build_services(settings, db, client, providers)
    second = await restarted.generation.dispatch(await admit(restarted, "@Mira waves again"))
    assert second.provider == "openai"
    assert len(relay.calls("create_character")) == 1
    history = await restarted.generation.route_history(second.id)
    assert history[0].provider == "relay" and "clip URL" in (history[0].error or "")
    (usable,) = await restarted.characters.load([created.character.id])
    assert usable.refused == {}  # not a refusal: the relay may take it once a clip URL is known

    # without fallback the member gets that reason and nothing stays held
    await restarted.guilds.update(ADMIN, fallback=False)
    refused_id = await admit(restarted, "@Mira waves a third time")
    refused = await restarted.generation.dispatch(refused_id)
    assert refused.state == "rejected" and "clip URL" in (refused.error or "")
    assert await ledger(db, refused_id) == {"hold": refused.estimate_micros, "release": refused.estimate_micros}
    assert len(openai.creates()) == 2


async def ledger(db: Database, job_id: int) -> dict[str, int]:
    rows = await db.fetchall("SELECT kind, amount_micros FROM ledger WHERE job_id = ?", (job_id,))
    return {r["kind"]: r["amount_micros"] for r in rows}


def test_a_remembered_discord_url_is_not_handed_out_once_it_has_expired() -> None:
    url = "https://cdn.discordapp.com/attachments/1/2/mira.mp4?ex={:x}&is=0&hm=abc&"
    now = 1_790_000_000.0
    assert unexpired(url.format(int(now) + 3600), now) == url.format(int(now) + 3600)
    assert unexpired(url.format(int(now) + 60), now) is None  # the provider would fetch it too late
    assert unexpired(url.format(int(now) - 1), now) is None
    assert unexpired("http://127.0.0.1:9/files/abc.mp4", now) == "http://127.0.0.1:9/files/abc.mp4"  # unsigned
    assert unexpired(None, now) is None
