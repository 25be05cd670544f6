"""Routing and fallback end to end: the real bot, the Discord sandbox, and the loopback
relay / openai / kling simulators. Each test drives /budget, /settings and /generate as members do
and checks what reached each simulator, the jobs/attempts/ledger rows, and what the channel says.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Castbot
from bot.providers.base import Orientation, Quality
from bot.providers.relay import RelayTimeouts
from bot.services.routing import typical_request
from discord_sandbox import DiscordSandbox, Member, StoredMessage
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, Simulators, World
from tests.e2e.test_generate import bot_messages, wait_result
from tests.fakes.kling_sim import KlingSim
from tests.fakes.openai_sim import Fault as OpenAIFault
from tests.fakes.openai_sim import OpenAISim
from tests.fakes.relay_sim import Fault as RelayFault
from tests.fakes.relay_sim import RelaySim

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-proj-ROUTING-e2e-5b7c1d"
KLING_KEY = "api-key-kling-ROUTING-e2e-9a4f"
OVERLOADED = "the relay is under heavy load; try again later"
NO_BALANCE = "the Kling account has no balance or resource pack left"
CHECKING = "checking whether the provider received it; it won't be sent again, so you can't be charged twice"


# --- simulators and the bot ------------------------------------------------------------------------


@pytest.fixture
async def relay(sims: Simulators) -> RelaySim:
    return await sims.start(RelaySim(job_seconds=0.2))


@pytest.fixture
async def openai(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=OPENAI_KEY, job_seconds=0.2, poll_after_ms=50))


@pytest.fixture
async def kling(sims: Simulators) -> KlingSim:
    return await sims.start(KlingSim(api_key=KLING_KEY, element_seconds=0.05, video_seconds=0.2))


async def start(
    harness: BotHarness,
    *,
    providers: str = "relay,openai",
    relay: RelaySim | None = None,
    openai: OpenAISim | None = None,
    kling: KlingSim | None = None,
) -> Castbot:
    settings: dict[str, Any] = {"providers": providers}
    if relay is not None:
        settings |= {"relay_api_key": relay.api_key, "relay_base_url": relay.base_url}
    if openai is not None:
        settings |= {"openai_api_key": OPENAI_KEY, "openai_base_url": openai.base_url}
    if kling is not None:
        settings |= {"kling_api_key": KLING_KEY, "kling_base_url": kling.base_url}
    return await harness.start(**settings)


async def run(sandbox: DiscordSandbox, world: World, who: Member, command: str, **options: Any) -> str:
    """An ephemeral command's final answer (text plus embed text)."""
    handle = await sandbox.invoke(world.guild, world.channel, who, command, options=options)
    reply = await handle.wait_final_message(timeout=15)
    assert handle.is_ephemeral
    return reply.content + "".join(str(e) for e in reply.embeds)


async def prepare_guild(sandbox: DiscordSandbox, world: World, **settings: Any) -> None:
    """A moderator sets a budget (paid providers need one) and the given /settings."""
    assert (await run(sandbox, world, world.admin, "budget set", monthly_usd="50")).startswith("Budget saved.")
    if settings:
        assert "Saved:" in await run(sandbox, world, world.admin, "settings", **settings)


async def generate(sandbox: DiscordSandbox, world: World, prompt: str, **options: Any) -> int:
    """/generate as the plain member; returns the queued job's number."""
    answer = await run(sandbox, world, world.member, "generate", prompt=prompt, **options)
    found = re.search(r"Job #(\d+) is queued", answer)
    assert found, answer
    return int(found[1])


async def job_row(bot: Castbot, job: int) -> dict[str, Any]:
    row = await bot.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job,))
    assert row is not None
    return dict(row)


async def wait_row(bot: Castbot, job: int, ok: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """Poll the job's row until `ok(row)`, at most 10 s."""
    deadline = time.monotonic() + 10
    while True:
        row = await job_row(bot, job)
        if ok(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; job is {row}")
        await asyncio.sleep(0.02)


async def final(sandbox: DiscordSandbox, world: World, bot: Castbot, job: int) -> StoredMessage:
    """The job's final post, once the bot has also recorded posting it."""
    message = await wait_result(sandbox, world, job)
    await wait_row(bot, job, lambda r: r["notified_at"] is not None, "the post to be recorded")
    return message


async def attempts(bot: Castbot, job: int) -> list[tuple[str, str, str | None]]:
    rows = await bot.db.fetchall(
        "SELECT provider, state, error_class FROM attempts WHERE job_id = ? ORDER BY n", (job,)
    )
    return [(r["provider"], r["state"], r["error_class"]) for r in rows]


async def ledger(bot: Castbot, job: int) -> dict[str, int]:
    rows = await bot.db.fetchall("SELECT kind, amount_micros FROM ledger WHERE job_id = ?", (job,))
    return {r["kind"]: r["amount_micros"] for r in rows}


async def guild_held(bot: Castbot, world: World) -> int:
    row = await bot.db.fetchone(
        "SELECT SUM(held_micros) FROM budget_counters WHERE scope = 'guild' AND scope_id = ?", (str(world.guild.id),)
    )
    assert row is not None
    return int(row[0] or 0)


def relay_price(bot: Castbot) -> int:
    """What the relay charges for a plain standard video (flat, whatever the length)."""
    return bot.providers["relay"].estimate(typical_request(10, Orientation.LANDSCAPE, Quality.STANDARD, 0))


def status_text(sandbox: DiscordSandbox, world: World, job: int) -> str:
    """The job's status message as it reads now ("" before it is posted)."""
    found = [m for m in bot_messages(sandbox, world) if m.embeds and m.embeds[0].get("title") == f"Job #{job}"]
    return str(found[0].embeds) if found else ""


async def pause_elapses(bot: Castbot, provider: str) -> None:
    """Fast-forward an open breaker to the end of its pause (instead of waiting a minute)."""
    async with bot.db.transaction() as conn:
        await conn.execute(
            "UPDATE provider_health SET open_until = ? WHERE provider = ? AND state = 'open'",
            (time.time() - 0.01, provider),
        )


# --- fallback on and off ---------------------------------------------------------------------------


async def test_relay_overloaded_job_runs_on_openai_and_the_member_is_told_why(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, relay: RelaySim, openai: OpenAISim
) -> None:
    bot = await start(harness, relay=relay, openai=openai)
    await prepare_guild(sandbox, world, fallback=True)
    relay.fail("create_video", RelayFault.heavy_load())

    job = await generate(sandbox, world, "a lighthouse at dusk")
    result = await final(sandbox, world, bot, job)

    assert f"your video for job #{job} is ready (openai, $0.80)" in result.content
    assert f"It ran on openai because relay couldn't take it ({OVERLOADED})." in result.content
    assert result.attachments[0].data == openai.video_bytes
    assert result.pinged_user_ids == [world.member.id]
    # the relay was asked once (it said 503 and made nothing), then openai made it: one video, one charge
    assert len(relay.calls("create_video")) == 1 and relay.tasks == {}
    assert relay.calls("create_video")[0].json["seconds"] == "10"  # the relay's next allowed length
    assert [r.json["seconds"] for r in openai.creates()] == ["8"]
    assert await attempts(bot, job) == [("relay", "not_sent", "Unavailable"), ("openai", "accepted", None)]
    row = await job_row(bot, job)
    assert (row["state"], row["provider"], row["cost_micros"]) == ("delivered", "openai", 800_000)
    assert row["estimate_micros"] == 800_000  # the hold covered the dearer hop of the chain
    assert (await ledger(bot, job))["capture"] == 800_000
    assert await guild_held(bot, world) == 0
    assert (await bot.services.health.state("relay")).state == "closed"  # one failure opens nothing


async def test_relay_overloaded_without_fallback_is_refused_clearly_and_nothing_else_is_tried(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, relay: RelaySim, openai: OpenAISim
) -> None:
    bot = await start(harness, relay=relay, openai=openai)
    await prepare_guild(sandbox, world)  # fallback stays off, the default
    relay.fail("create_video", RelayFault.heavy_load())

    job = await generate(sandbox, world, "a lighthouse at dusk")
    result = await final(sandbox, world, bot, job)

    price = relay_price(bot)
    assert f"job #{job} failed at the provider: {OVERLOADED}. Nothing was charged" in result.content
    assert "a moderator can allow that with `/settings fallback:True`" in result.content
    assert "It ran on" not in result.content
    assert result.attachments == []
    assert len(relay.calls("create_video")) == 1
    assert openai.creates() == []
    row = await job_row(bot, job)
    assert (row["state"], row["estimate_micros"]) == ("failed", price)  # only the relay's price was held
    assert await attempts(bot, job) == [("relay", "not_sent", "Unavailable")]
    assert await ledger(bot, job) == {"hold": price, "release": price}
    assert await guild_held(bot, world) == 0


# --- ambiguous submissions: never sent twice ------------------------------------------------------


async def test_relay_read_timeout_after_create_keeps_the_hold_and_is_never_resubmitted(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    relay: RelaySim,
    openai: OpenAISim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = await start(harness, relay=relay, openai=openai)
    monkeypatch.setattr(bot.providers["relay"], "_t", replace(RelayTimeouts(), create_read=0.3))
    # the status message may change at once (not 10 s after its last edit)
    monkeypatch.setattr(bot.actions.delivery.status_edits, "progress_every", 0.05)
    await prepare_guild(sandbox, world, fallback=True)  # fallback on, and still nothing else is tried
    relay.fail("create_video", RelayFault.read_timeout(after_create=True, hang=10))

    job = await generate(sandbox, world, "a lighthouse at dusk")
    row = await wait_row(bot, job, lambda r: r["state"] == "ambiguous", "the job to become ambiguous")
    hold = row["estimate_micros"]

    # the member's status message says the outcome is being checked and that nothing is sent twice
    await sandbox.wait_for(
        lambda: CHECKING in status_text(sandbox, world, job) or None, 5, "the status message to show the check"
    )
    # the tracker looks at the job again and again (the relay cannot list its tasks) ...
    seen = {row["next_poll_at"]}

    def rescheduled_three_times(r: dict[str, Any]) -> bool:
        seen.add(r["next_poll_at"])
        return len(seen) >= 4

    await wait_row(bot, job, rescheduled_three_times, "three reconcile passes")
    # ... and never sends it again, anywhere: the relay made a task and may bill it
    assert len(relay.calls("create_video")) == 1 and len(relay.tasks) == 1
    assert openai.creates() == []
    row = await job_row(bot, job)
    assert (row["state"], row["provider"], row["external_id"]) == ("ambiguous", "relay", None)
    assert await attempts(bot, job) == [("relay", "ambiguous", "Ambiguous")]
    assert await ledger(bot, job) == {"hold": hold}  # the hold is kept
    assert await guild_held(bot, world) == hold
    assert not any(f"job #{job}" in m.content for m in bot_messages(sandbox, world))  # no final post yet


async def test_openai_read_timeout_is_reconciled_by_listing_and_delivered_once(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    relay: RelaySim,
    openai: OpenAISim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = await start(harness, relay=relay, openai=openai)
    monkeypatch.setattr(bot.providers["openai"], "_timeout", httpx.Timeout(2.0, read=0.3))
    # openai first (stability keeps the server's order), relay as the fallback it must NOT reach
    await prepare_guild(sandbox, world, providers="openai,relay", priority="stability", fallback=True)
    openai.script("create", OpenAIFault.READ_TIMEOUT, delay=5)

    job = await generate(sandbox, world, "a lighthouse at dusk")
    result = await final(sandbox, world, bot, job)

    assert f"your video for job #{job} is ready (openai, $0.80)" in result.content
    assert "It ran on" not in result.content
    assert result.attachments[0].data == openai.video_bytes
    assert len(openai.creates()) == 1 and len(openai.jobs) == 1
    assert relay.calls("create_video") == []
    assert openai.requests_to("GET", "/v1/videos"), "reconciled by listing the account's videos"
    (video_id,) = openai.jobs
    row = await job_row(bot, job)
    assert (row["state"], row["external_id"], row["cost_micros"]) == ("delivered", video_id, 800_000)
    assert await attempts(bot, job) == [("openai", "accepted", None)]  # the ambiguous attempt, matched
    assert (await ledger(bot, job))["capture"] == 800_000
    assert await guild_held(bot, world) == 0


# --- kling out of balance: disabled, moderators told ----------------------------------------------


async def test_kling_out_of_balance_is_disabled_the_moderators_are_told_and_can_turn_it_back_on(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, kling: KlingSim, openai: OpenAISim
) -> None:
    bot = await start(harness, providers="kling,openai", kling=kling, openai=openai)
    await prepare_guild(sandbox, world, providers="kling")
    kling.add_fault("create", http=429, code=1102, message="resource pack exhausted")

    job = await generate(sandbox, world, "a lighthouse at dusk")
    result = await final(sandbox, world, bot, job)

    assert f"job #{job} failed at the provider: {NO_BALANCE}. Nothing was charged" in result.content
    assert (
        f"⚠️ Moderators: `kling` is now turned off for this bot after an account problem ({NO_BALANCE})."
        in result.content
    )
    assert "a moderator can turn it back on with `/settings enable_provider:kling`" in result.content
    assert "fallback:True" not in result.content  # the account, not the routing, needs a human
    assert result.pinged_user_ids == [world.member.id]  # the notice pings nobody else
    state = await bot.services.health.state("kling")
    assert state.state == "disabled" and state.reason == f"{NO_BALANCE} (1102)"
    assert KLING_KEY not in result.content
    assert openai.creates() == []
    assert (await job_row(bot, job))["state"] == "failed"
    assert await guild_held(bot, world) == 0

    # while it is off, new jobs are refused up front with the reason, and nothing is held
    refused = await run(sandbox, world, world.member, "generate", prompt="a second try")
    assert "`kling` is turned off until a moderator turns it back on" in refused and NO_BALANCE in refused
    assert len(kling.recorded("POST", "/omni-video/")) == 1
    assert tuple(await bot.db.fetchone("SELECT COUNT(*) FROM jobs") or ()) == (1,)

    # only a moderator may turn it back on; then jobs run on kling again
    assert "Only moderators" in await run(sandbox, world, world.member, "settings", enable_provider="kling")
    assert "`kling` is enabled again." in await run(sandbox, world, world.admin, "settings", enable_provider="kling")
    assert (await bot.services.health.state("kling")).state == "closed"
    again = await generate(sandbox, world, "a lighthouse at dawn")
    done = await final(sandbox, world, bot, again)
    assert f"your video for job #{again} is ready (kling," in done.content
    assert done.attachments[0].data == kling.video_bytes
    assert len(kling.recorded("POST", "/omni-video/")) == 2


async def test_kling_out_of_balance_with_fallback_runs_on_openai_and_still_warns_the_moderators(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, kling: KlingSim, openai: OpenAISim
) -> None:
    bot = await start(harness, providers="kling,openai", kling=kling, openai=openai)
    await prepare_guild(sandbox, world, fallback=True)
    kling.add_fault("create", http=429, code=1102, message="resource pack exhausted")

    job = await generate(sandbox, world, "a lighthouse at dusk")
    result = await final(sandbox, world, bot, job)

    assert f"your video for job #{job} is ready (openai, $0.80)" in result.content
    assert f"It ran on openai because kling couldn't take it ({NO_BALANCE})." in result.content
    assert "⚠️ Moderators: `kling` is now turned off" in result.content
    assert result.attachments[0].data == openai.video_bytes
    assert await attempts(bot, job) == [("kling", "not_sent", "QuotaExhausted"), ("openai", "accepted", None)]
    assert (await bot.services.health.state("kling")).state == "disabled"
    assert len(openai.creates()) == 1


# --- the breaker through the pipeline ---------------------------------------------------------------


async def test_relay_breaker_opens_after_repeated_failures_probes_and_closes(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, relay: RelaySim, openai: OpenAISim
) -> None:
    bot = await start(harness, relay=relay, openai=openai)
    health = bot.services.health
    await prepare_guild(sandbox, world, fallback=True)

    # three submits in a row fail: each job still gets made, on openai
    relay.fail("create_video", *(RelayFault.heavy_load() for _ in range(3)))
    for n in range(1, 4):
        job = await generate(sandbox, world, f"lighthouse number {n}")
        result = await final(sandbox, world, bot, job)
        assert f"It ran on openai because relay couldn't take it ({OVERLOADED})." in result.content
    state = await health.state("relay")
    assert state.state == "open" and state.open_until is not None
    assert 50 < state.open_until - time.time() <= 60
    assert len(relay.calls("create_video")) == 3

    # while it is open the relay is not even asked
    job = await generate(sandbox, world, "lighthouse number 4")
    result = await final(sandbox, world, bot, job)
    assert f"job #{job} is ready (openai, $0.80)" in result.content
    assert len(relay.calls("create_video")) == 3
    assert (await job_row(bot, job))["providers"] == "openai"

    # the pause is over: one job probes the relay; it fails, so the breaker reopens for twice as long
    await pause_elapses(bot, "relay")
    relay.fail("create_video", RelayFault.heavy_load())
    job = await generate(sandbox, world, "lighthouse number 5")
    result = await final(sandbox, world, bot, job)
    assert "It ran on openai because relay couldn't take it" in result.content
    assert len(relay.calls("create_video")) == 4
    state = await health.state("relay")
    assert state.state == "open" and state.open_until is not None
    assert 110 < state.open_until - time.time() <= 120

    # the next probe succeeds: the breaker closes and the relay makes the video
    await pause_elapses(bot, "relay")
    job = await generate(sandbox, world, "lighthouse number 6")
    result = await final(sandbox, world, bot, job)
    price = relay_price(bot)
    assert f"job #{job} is ready (relay, ${price / 1_000_000:.2f})" in result.content
    assert "It ran on" not in result.content
    assert result.attachments[0].data == relay.video
    assert len(relay.calls("create_video")) == 5 and len(relay.tasks) == 1
    assert (await health.state("relay")).state == "closed"
    # closing forgot the old failures: the relay starts clean
    failures = await bot.db.fetchone("SELECT COUNT(*) FROM provider_events WHERE provider = 'relay' AND ok = 0")
    assert tuple(failures or ()) == (0,)
    assert len(openai.creates()) == 5  # jobs 1-5


# --- characters across providers --------------------------------------------------------------------


@pytest.fixture
def clip(tmp_path: Path) -> bytes:
    return make_clip(tmp_path / "mira.mp4", seconds=3.0, size=(320, 180), fps=12, blur=()).read_bytes()


async def test_a_character_made_on_the_relay_is_registered_on_openai_from_stored_files_when_the_job_falls_back(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, relay: RelaySim, openai: OpenAISim, clip: bytes
) -> None:
    bot = await start(harness, relay=relay, openai=openai)
    await prepare_guild(sandbox, world, fallback=True)
    video = sandbox.add_attachment(clip, "mira.mp4", "video/mp4")
    created = await run(sandbox, world, world.member, "character create", name="Mira", video=video)
    assert "Created `@Mira`" in created
    (registration,) = relay.calls("create_character")
    username = next(iter(relay.characters.values())).username
    assert openai.characters == {}  # openai registers lazily, on first use
    fetched = len(sandbox.cdn_fetches)
    assert fetched >= 1  # the relay fetched the fresh Discord attachment URL

    # a day later the attachment URL has expired; the relay is overloaded; the job falls back
    sandbox.advance(25 * 3600)
    relay.fail("create_video", RelayFault.heavy_load())
    job = await generate(sandbox, world, "@Mira waves from the lighthouse")
    result = await final(sandbox, world, bot, job)

    assert f"your video for job #{job} is ready (openai, $0.80)" in result.content
    assert f"It ran on openai because relay couldn't take it ({OVERLOADED})." in result.content
    assert relay.calls("create_video")[0].json["prompt"] == f"@{username} waves from the lighthouse"
    # openai got the character from the bot's stored clip, not from the (expired) Discord URL
    (upload,) = openai.requests_to("POST", "/v1/videos/characters")
    assert upload.form is not None and upload.form["name"] == "Mira"
    assert len(sandbox.cdn_fetches) == fetched
    ((character_id, name),) = openai.characters.items()
    assert name == "Mira"
    (create,) = openai.creates()
    assert create.json["characters"] == [{"id": character_id}]
    assert create.json["prompt"] == "Mira waves from the lighthouse"
    rows = await bot.db.fetchall("SELECT provider, state, external_id FROM character_handles ORDER BY provider")
    assert [tuple(r) for r in rows] == [("openai", "ready", character_id), ("relay", "ready", username)]
    assert registration.json["url"].startswith(sandbox.base_url)

    # the next job that falls back there reuses the handle: no second upload
    relay.fail("create_video", RelayFault.heavy_load())
    again = await generate(sandbox, world, "@Mira waves again")
    await final(sandbox, world, bot, again)
    assert len(openai.requests_to("POST", "/v1/videos/characters")) == 1
    assert openai.creates()[-1].json["characters"] == [{"id": character_id}]


async def test_an_expired_upload_url_does_not_stop_a_job_openai_takes_the_character_from_stored_files(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, relay: RelaySim, openai: OpenAISim, clip: bytes
) -> None:
    bot = await start(harness, relay=relay, openai=openai)
    await prepare_guild(sandbox, world, providers="openai,relay", fallback=True)
    video = sandbox.add_attachment(clip, "mira.mp4", "video/mp4")
    assert "Created `@Mira`" in await run(sandbox, world, world.member, "character create", name="Mira", video=video)
    assert len(openai.characters) == 1 and relay.characters == {}  # registered with the first provider only

    # a day later the relay comes first, but the Discord URL of the upload has expired
    assert "Saved:" in await run(sandbox, world, world.admin, "settings", providers="relay,openai")
    sandbox.advance(25 * 3600)
    fetched = len(sandbox.cdn_fetches)
    job = await generate(sandbox, world, "@Mira waves from the lighthouse")
    result = await final(sandbox, world, bot, job)

    assert f"your video for job #{job} is ready (openai, $0.80)" in result.content
    assert "It ran on openai because relay couldn't take it (" in result.content
    assert relay.characters == {} and relay.calls("create_video") == []
    # if the relay was handed the stale URL at all, it got nothing from it
    assert all(status == 404 for _, status in sandbox.cdn_fetches[fetched:])
    (character_id,) = openai.characters
    assert openai.creates()[0].json["characters"] == [{"id": character_id}]
    assert len(openai.requests_to("POST", "/v1/videos/characters")) == 1
    assert await attempts(bot, job) == [("relay", "not_sent", "Rejected"), ("openai", "accepted", None)]
