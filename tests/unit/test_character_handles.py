"""Provider handles: registration at creation with the preferred provider, lazily on first use,
refusals remembered, one registration at a time. Against the loopback OpenAI simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bot.providers.base import Rejected, RejectReason, Unavailable
from bot.providers.local import LocalProvider
from bot.providers.openai import OpenAIProvider
from bot.providers.pricing import PriceBook
from bot.services.actors import Actor
from tests.conftest import Simulators
from tests.fakes.openai_sim import Fault, OpenAISim
from tests.postgres import ENGINES, open_test_database
from tests.unit.test_character_service import (
    MEMBER,
    OWNER,
    ClipServer,
    Env,
    clip_bytes,
    clip_server,
    make_env,
)

__all__ = ["clip_bytes", "clip_server"]  # shared fixtures

KEY = "sk-sim-characters-0123456789"
FAST = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)


@pytest.fixture
async def sim(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=KEY, job_seconds=0.2))


@pytest.fixture(params=ENGINES)
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, clip_server: ClipServer, clip_bytes: bytes, sim: OpenAISim
) -> AsyncIterator[Env]:
    async with httpx.AsyncClient() as client, open_test_database(request.param, request, tmp_path / "db") as db:
        openai = OpenAIProvider(
            client,
            api_key=SecretStr(KEY),
            base_url=sim.base_url,
            prices=PriceBook(),
            timeout=FAST,
            download_timeout=FAST,
        )
        local = LocalProvider(work_dir=tmp_path / "renders")
        providers = {"openai": openai, "local": local}
        async for e in make_env(tmp_path, clip_server, clip_bytes, providers=providers, database=db):
            yield e


def character_uploads(sim: OpenAISim) -> int:
    return len(sim.requests_to("POST", "/videos/characters"))


async def test_created_and_registered_with_the_preferred_provider(env: Env, sim: OpenAISim) -> None:
    created = await env.create(OWNER, "Mossy")
    assert created.registration is not None
    assert (created.registration.provider, created.registration.outcome) == ("openai", "ready")
    assert list(sim.characters.values()) == ["Mossy"]
    usable = (await env.service.resolve_for_generation(MEMBER, ["mossy"]))[0]
    assert usable.handles["openai"].external_id in sim.characters
    # later uses reuse the stored handle: no second upload
    handle = await env.service.ensure_handle(usable, env.service._providers["openai"])
    assert handle == usable.handles["openai"] and character_uploads(sim) == 1


async def test_a_likeness_refusal_is_explained_and_the_character_still_exists(env: Env, sim: OpenAISim) -> None:
    sim.script("character", Fault.HUMAN_LIKENESS)
    created = await env.create(OWNER, "Ann")
    reg = created.registration
    assert reg is not None and (reg.provider, reg.outcome, reg.others) == ("openai", "refused", ("local",))
    assert "likeness" in reg.reason
    usable = (await env.service.resolve_for_generation(MEMBER, ["ann"]))[0]
    assert "likeness" in usable.refused["openai"] and "openai" not in usable.handles
    assert "likeness" in (await env.service.info(OWNER, "ann")).refused["openai"]
    # asking again answers from memory instead of uploading the likeness again
    with pytest.raises(Rejected) as again:
        await env.service.ensure_handle(usable, env.service._providers["openai"])
    assert again.value.reason is RejectReason.UNSUPPORTED and character_uploads(sim) == 1
    # the local provider still takes it
    local = await env.service.ensure_handle(usable, env.service._providers["local"])
    assert local.provider == "local"


async def test_a_transient_failure_leaves_registration_for_later(env: Env, sim: OpenAISim) -> None:
    sim.script("character", Fault.SERVER_ERROR)
    created = await env.create(OWNER, "Ann")
    assert created.registration is not None and created.registration.outcome == "later"
    usable = (await env.service.resolve_for_generation(OWNER, ["ann"]))[0]
    assert usable.handles == {} and usable.refused == {}
    # first use registers it
    handle = await env.service.ensure_handle(usable, env.service._providers["openai"])
    assert handle.external_id in sim.characters
    assert (await env.service.resolve_for_generation(OWNER, ["ann"]))[0].handles["openai"] == handle


async def test_concurrent_first_uses_register_once(env: Env, sim: OpenAISim) -> None:
    await env.service._guilds.update(Actor(user_id=9, guild_id=100, manage_guild=True), providers=("local",))
    created = await env.create(OWNER, "Ann")
    assert created.registration is None  # this guild prefers local: nothing registered up front
    usable = (await env.service.resolve_for_generation(OWNER, ["ann"]))[0]
    openai = env.service._providers["openai"]
    handles = await asyncio.gather(*(env.service.ensure_handle(usable, openai) for _ in range(4)))
    assert len(set(handles)) == 1 and character_uploads(sim) == 1
    assert env.service._handles.busy == 0


async def test_provider_errors_other_than_refusals_store_nothing(env: Env, sim: OpenAISim) -> None:
    await env.service._guilds.update(Actor(user_id=9, guild_id=100, manage_guild=True), providers=("local",))
    await env.create(OWNER, "Ann")
    usable = (await env.service.resolve_for_generation(OWNER, ["ann"]))[0]
    sim.script("character", Fault.SERVER_ERROR)
    with pytest.raises(Unavailable):
        await env.service.ensure_handle(usable, env.service._providers["openai"])
    fresh = (await env.service.resolve_for_generation(OWNER, ["ann"]))[0]
    assert fresh.handles == {} and fresh.refused == {}


async def test_save_handle_mark_refused_and_load(env: Env) -> None:
    created = await env.create(OWNER, "Ann", "public")
    cid = created.character.id
    await env.service.mark_refused(cid, "kling", "needs two frames")
    loaded = await env.service.load([cid, 12345], keys=["annie"], names=["Annie"])
    assert [(c.character_id, c.key, c.name, c.asset.name) for c in loaded] == [(cid, "annie", "Annie", "Ann")]
    assert loaded[0].refused["kling"] == "needs two frames"
    assert loaded[0].asset.clip_path.is_file() and loaded[0].asset.clip_duration == pytest.approx(3.0, abs=0.1)


async def test_an_expiring_handle_is_reused_until_close_to_its_expiry_then_registered_again(
    env: Env, sim: OpenAISim
) -> None:
    created = await env.create(OWNER, "Mossy")
    cid = created.character.id
    openai = env.service._providers["openai"]
    first = (await env.service.resolve_for_generation(MEMBER, ["mossy"]))[0].handles["openai"]
    # as a provider whose uploads expire would store it: two hours left
    await env.service._handles.save(cid, replace(first, expires_at=env.clock.now + 2 * 3600))

    usable = (await env.service.resolve_for_generation(MEMBER, ["mossy"]))[0]
    assert usable.handles["openai"].expires_at == pytest.approx(env.clock.now + 2 * 3600, abs=10)
    assert await env.service.ensure_handle(usable, openai) == usable.handles["openai"]
    assert character_uploads(sim) == 1

    # within the last hour a queued job could outlive it: not offered, and registered again at use
    env.clock.now += 3600 + 60
    usable = (await env.service.resolve_for_generation(MEMBER, ["mossy"]))[0]
    assert "openai" not in usable.handles
    again = await env.service.ensure_handle(usable, openai)
    assert character_uploads(sim) == 2
    assert again.external_id != first.external_id and again.expires_at is None
    reloaded = (await env.service.resolve_for_generation(MEMBER, ["mossy"]))[0]
    assert reloaded.handles["openai"] == again
