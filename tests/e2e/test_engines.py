"""The live engines without a job list, Gemini Omni and fal, through the real bot and the Discord
sandbox: an outage falls back per the server's setting, an uncertain submit keeps its hold and is
never sent again (neither engine can list its jobs to find it), and /about shows both engines
with what a typical video costs.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from bot.app import Castbot
from discord_sandbox import DiscordSandbox
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, Simulators, World
from tests.e2e.test_generate import bot_messages
from tests.e2e.test_routing import (
    CHECKING,
    attempts,
    final,
    generate,
    guild_held,
    job_row,
    ledger,
    prepare_guild,
    run,
    status_text,
    wait_row,
)
from tests.fakes.fal_sim import FalSim
from tests.fakes.gemini_sim import GeminiSim

pytestmark = pytest.mark.e2e

GEMINI_KEY = "AIzaSy-ENGINES-e2e-7c41d2"
FAL_KEY = "fal-ENGINES-e2e:5b9a03e1"
UNAVAILABLE = "The model is overloaded. Please try again later."


@pytest.fixture
async def gemini(sims: Simulators) -> GeminiSim:
    return await sims.start(GeminiSim(api_key=GEMINI_KEY, video_seconds=0.2))


@pytest.fixture
async def fal(sims: Simulators) -> FalSim:
    return await sims.start(FalSim(api_key=FAL_KEY, job_seconds=0.2))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("engine-clips") / "mira.mp4"
    return make_clip(path, seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()


async def start(harness: BotHarness, gemini: GeminiSim, fal: FalSim, providers: str = "gemini,fal") -> Castbot:
    bot = await harness.start(
        providers=providers,
        gemini_api_key=GEMINI_KEY,
        gemini_base_url=gemini.base_url,
        fal_key=FAL_KEY,
        fal_queue_url=fal.queue_url,
        fal_rest_url=fal.rest_url,
        fal_cdn_url=fal.cdn_url,
    )
    # watch every change of the status message, not one per 10 s
    monkeypatch = harness.monkeypatch
    monkeypatch.setattr(bot.actions.delivery.status_edits, "progress_every", 0.05)
    return bot


async def mira(sandbox: DiscordSandbox, world: World, clip: bytes) -> None:
    video = sandbox.add_attachment(clip, "mira.mp4", "video/mp4")
    reply = await run(sandbox, world, world.member, "character create", name="Mira", video=video)
    assert "Created `@Mira`" in reply, reply


# --- an outage: fallback on and off -----------------------------------------------------------------


async def test_gemini_overloaded_job_runs_on_fal_and_the_member_is_told_why(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, gemini: GeminiSim, fal: FalSim, clip: bytes
) -> None:
    bot = await start(harness, gemini, fal)
    await prepare_guild(sandbox, world, providers="gemini,fal", priority="stability", fallback=True)
    await mira(sandbox, world, clip)
    gemini.add_fault("create", http=503, status="UNAVAILABLE", message=UNAVAILABLE)

    job = await generate(sandbox, world, "@Mira lights a lantern on the pier")
    result = await final(sandbox, world, bot, job)

    assert re.search(rf"your video for job #{job} is ready \(fal, \$[\d.]+\)", result.content), result.content
    assert "It ran on fal because gemini couldn't take it" in result.content
    assert result.attachments[0].data == fal.video_bytes
    assert len(gemini.creates) == 1 and gemini.interactions == {}
    (submitted,) = fal.jobs.values()
    assert submitted.errors == [] and "@Video1" in submitted.body["prompt"]
    assert await attempts(bot, job) == [("gemini", "not_sent", "Unavailable"), ("fal", "accepted", None)]
    row = await job_row(bot, job)
    entries = await ledger(bot, job)
    assert entries["capture"] == row["cost_micros"] > 0
    assert entries["hold"] == row["estimate_micros"] >= row["cost_micros"]
    assert await guild_held(bot, world) == 0


async def test_fal_down_without_fallback_is_refused_clearly_and_gemini_is_never_tried(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, gemini: GeminiSim, fal: FalSim, clip: bytes
) -> None:
    bot = await start(harness, gemini, fal, providers="fal,gemini")
    await prepare_guild(sandbox, world, providers="fal,gemini", priority="stability")  # fallback off
    await mira(sandbox, world, clip)
    fal.add_fault("submit", http=503, body={"detail": "Service temporarily unavailable"})

    job = await generate(sandbox, world, "@Mira lights a lantern on the pier")
    result = await final(sandbox, world, bot, job)

    assert f"job #{job} failed at the provider" in result.content, result.content
    assert "Nothing was charged" in result.content
    assert "a moderator can allow that with `/settings fallback:True`" in result.content
    assert result.attachments == []
    assert len(fal.submits()) == 1 and fal.jobs == {}
    assert gemini.creates == []
    assert await attempts(bot, job) == [("fal", "not_sent", "Unavailable")]
    row = await job_row(bot, job)
    assert row["state"] == "failed"
    assert await ledger(bot, job) == {"hold": row["estimate_micros"], "release": row["estimate_micros"]}
    assert await guild_held(bot, world) == 0


# --- an uncertain submit: the hold is kept, nothing is sent twice ----------------------------------


@pytest.mark.parametrize("engine", ["gemini", "fal"])
async def test_a_read_timeout_after_the_engine_made_the_job_keeps_the_hold_and_never_sends_it_again(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    gemini: GeminiSim,
    fal: FalSim,
    clip: bytes,
    monkeypatch: pytest.MonkeyPatch,
    engine: str,
) -> None:
    other = "fal" if engine == "gemini" else "gemini"
    bot = await start(harness, gemini, fal, providers=f"{engine},{other}")
    short = httpx.Timeout(2.0, read=0.3)
    adapter: Any = bot.providers[engine]
    monkeypatch.setattr(adapter, "_timeout", short)
    if engine == "fal":
        monkeypatch.setattr(adapter._queue, "_timeout", short)
    # fallback on, and still nothing else is tried: the first engine may be rendering and billing
    await prepare_guild(sandbox, world, providers=f"{engine},{other}", priority="stability", fallback=True)
    await mira(sandbox, world, clip)
    if engine == "gemini":
        gemini.add_fault("create", "read_timeout", create=True)
    else:
        fal.add_fault("submit", "read_timeout", create=True)

    job = await generate(sandbox, world, "@Mira lights a lantern on the pier")
    row = await wait_row(bot, job, lambda r: r["state"] == "ambiguous", "the job to become ambiguous")
    hold = row["estimate_micros"]
    await sandbox.wait_for(
        lambda: CHECKING in status_text(sandbox, world, job) or None, 5, "the status message to show the check"
    )
    seen = {row["next_poll_at"]}

    def looked_at_three_more_times(r: dict[str, Any]) -> bool:
        seen.add(r["next_poll_at"])
        return len(seen) >= 4

    await wait_row(bot, job, looked_at_three_more_times, "three reconcile passes")

    # the engine made one job; nobody sent another, here or to the other engine
    made = len(gemini.interactions) if engine == "gemini" else len(fal.jobs)
    sent = len(gemini.creates) if engine == "gemini" else len(fal.submits())
    assert (made, sent) == (1, 1)
    assert (len(fal.submits()) if engine == "gemini" else len(gemini.creates)) == 0
    row = await job_row(bot, job)
    assert (row["state"], row["provider"], row["external_id"]) == ("ambiguous", engine, None)
    assert await attempts(bot, job) == [(engine, "ambiguous", "Ambiguous")]
    assert await ledger(bot, job) == {"hold": hold}
    assert await guild_held(bot, world) == hold
    assert not any(f"job #{job}" in m.content for m in bot_messages(sandbox, world))


# --- /about ----------------------------------------------------------------------------------------


async def test_about_names_both_engines_and_what_a_typical_video_costs(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, gemini: GeminiSim, fal: FalSim
) -> None:
    await start(harness, gemini, fal)
    about = await run(sandbox, world, world.member, "about")
    assert "**gemini (`gemini-omni-1.1-flash`)**: healthy" in about, about
    assert "**fal (`wan/v2.6/reference-to-video`)**: healthy" in about, about
    # 8 s at Omni's 720p rate, with one character's references; fal's Wan makes 10 s at $0.10 a second
    assert re.search(r"gemini \(`gemini-omni-1\.1-flash`\)\*\*: healthy · \$0\.8\d+ per typical video", about)
    assert "**fal (`wan/v2.6/reference-to-video`)**: healthy · $1.00 per typical video" in about


# --- fal's account limit: jobs wait their turn --------------------------------------------------------


async def test_jobs_refused_for_a_full_fal_account_wait_their_turn_and_never_fail_for_it(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, gemini: GeminiSim, fal: FalSim, clip: bytes
) -> None:
    bot = await start(harness, gemini, fal, providers="fal,gemini")
    # fallback on, and still the job waits for fal: a full account is not a failing provider
    await prepare_guild(sandbox, world, providers="fal,gemini", priority="stability", fallback=True)
    await mira(sandbox, world, clip)
    fal.add_fault("submit", http=429, retry_after=0.05, body={"detail": "Too many concurrent requests"}, times=5)

    job = await generate(sandbox, world, "@Mira lights a lantern on the pier")
    result = await final(sandbox, world, bot, job)

    assert f"your video for job #{job} is ready (fal" in result.content, result.content
    assert "It ran on" not in result.content
    assert result.attachments[0].data == fal.video_bytes
    assert gemini.creates == []
    assert await attempts(bot, job) == [("fal", "not_sent", "RateLimited")] * 5 + [("fal", "accepted", None)]
    assert (await bot.services.health.state("fal")).state == "closed"
    row = await job_row(bot, job)
    assert (await ledger(bot, job))["capture"] == row["cost_micros"] > 0
