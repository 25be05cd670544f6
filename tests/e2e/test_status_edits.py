"""Status messages and dispatch at scale, with the real bot against the Discord sandbox.

Status-message edits run in background tasks paced per channel (never inside the loop's pass),
are made on state changes and coarse progress steps only, and every job still ends with its final
state shown. Held jobs are dispatched a few at a time.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

import bot.services.status_edits as status_edits
from bot.app import Castbot
from bot.services.actors import Actor
from bot.services.generation import GenerateCommand
from bot.store import guilds as guild_store
from discord_sandbox import Call, Channel, DiscordSandbox, StoredMessage
from tests.conftest import BotHarness, Simulators, World
from tests.fakes.openai_sim import OpenAISim

pytestmark = pytest.mark.e2e

TIMEOUT = 20.0  # generous for a loaded 2-core machine; the tests finish well before
OPENAI_KEY = "sk-test-123456-e2e-status-edits"
WAITING, SENDING, QUEUED, DELIVERED = (
    "waiting to be sent",
    "sending to the provider",
    "queued at the provider",
    "delivered",
)


# --- helpers --------------------------------------------------------------------------------------


async def raise_active_caps(bot: Castbot, guild_id: int, limit: int) -> None:
    async with bot.db.transaction() as conn:
        changes = {"max_active_per_member": limit, "max_active_per_guild": limit}
        await guild_store.upsert(conn, guild_id, changes, time.time())


def status_messages(sandbox: DiscordSandbox, channel: Channel) -> dict[int, StoredMessage]:
    """Job number -> its status message in `channel`."""
    found = {}
    for m in channel.visible_messages:
        title = m.embeds[0].get("title", "") if m.author.id == sandbox.bot.id and m.embeds else ""
        if match := re.fullmatch(r"Job #(\d+)", title):
            found[int(match[1])] = m
    return found


def shown(message: StoredMessage) -> list[str]:
    """The Status field of a status message in every version it had, oldest first."""
    versions = [*message.history, {"embeds": message.embeds}]
    return [
        str(f["value"])
        for version in versions
        for embed in version.get("embeds") or []
        for f in embed.get("fields", [])
        if f["name"] == "Status"
    ]


def is_final(message: StoredMessage) -> bool:
    return shown(message)[-1] == DELIVERED and message.components == []


def edits_in(sandbox: DiscordSandbox, channel: Channel) -> list[Call]:
    return sandbox.calls_to("PATCH", rf"^/channels/{channel.id}/messages/\d+$")


def results_in(sandbox: DiscordSandbox, channel: Channel) -> list[StoredMessage]:
    return [m for m in channel.visible_messages if m.author.id == sandbox.bot.id and m.message_reference]


async def generate(sandbox: DiscordSandbox, world: World, channel: Channel, prompt: str) -> StoredMessage:
    """/generate in `channel`; returns the job's status message once the member was answered."""
    handle = await sandbox.invoke(world.guild, channel, world.member, "generate", prompt=prompt, seconds=2)
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    match = re.search(r"Job #(\d+) is queued", reply.content)
    assert match, reply.content
    job = int(match[1])
    return await sandbox.wait_for(lambda: status_messages(sandbox, channel).get(job), TIMEOUT, f"job #{job}'s status")


async def wait_shown(sandbox: DiscordSandbox, message: StoredMessage, pattern: str) -> str:
    def current() -> str | None:
        value = shown(sandbox.message(message.id))[-1]
        return value if re.fullmatch(pattern, value) else None

    return await sandbox.wait_for(current, TIMEOUT, f"the status message to show {pattern!r}")


async def wait_until(check: Any, what: str, timeout: float = TIMEOUT) -> None:
    """Poll an async condition on the bot's own state (it changes after Discord has answered)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


def result_posts(world: World, job: int) -> list[StoredMessage] | None:
    """The job's final message(s) in the world's channel, found by the nonce it is posted with."""
    return [m for m in world.channel.visible_messages if m.nonce == f"castbot-job-{job}"] or None


def shorten_confirm_wait(bot: Castbot, monkeypatch: pytest.MonkeyPatch, seconds: float = 0.2) -> None:
    """How long /generate's confirmation waits for the status message's link."""
    monkeypatch.setattr(bot.actions.generation, "confirm_within", seconds)


async def one_loop_pass(bot: Castbot, sandbox: DiscordSandbox) -> None:
    """Wake the delivery loop and wait until it has finished a pass (it clears the flag after one)."""
    bot.services.wake_loop()
    await sandbox.wait_for(lambda: not bot.services.loop_wakeup.is_set() or None, TIMEOUT, "a loop pass")


# --- (a) many jobs in one channel -----------------------------------------------------------------


async def test_many_jobs_in_one_channel_are_edited_within_its_pace_and_all_end_final(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    per_channel, window = 3, 1.0  # Discord's real pace is 5 per 5 s: the same shape, faster
    monkeypatch.setattr(status_edits, "CHANNEL_EDITS", per_channel)
    monkeypatch.setattr(status_edits, "CHANNEL_WINDOW", window)
    monkeypatch.setattr(status_edits, "EDITS_PER_SECOND", 1000.0)
    bot = await harness.start(local_render_seconds=1.0)
    # every progress step of every job asks for an edit: far more than the channel's pace
    monkeypatch.setattr(bot.actions.delivery.status_edits, "progress_every", 0.0)
    await raise_active_caps(bot, world.guild.id, 50)
    jobs = 8

    for i in range(jobs):
        await generate(sandbox, world, world.channel, f"lanterns drifting {i}")
    await sandbox.wait_for(
        lambda: len(results_in(sandbox, world.channel)) == jobs or None, 3 * TIMEOUT, "every job's result"
    )
    await sandbox.wait_for(
        lambda: all(is_final(m) for m in status_messages(sandbox, world.channel).values()) or None,
        TIMEOUT,
        "every status message in its final state",
    )

    # every job ends with its final state on its own status message, without the Cancel button
    messages = status_messages(sandbox, world.channel)
    assert sorted(messages) == list(range(1, jobs + 1))
    for message in messages.values():
        assert shown(message)[-1] == DELIVERED and message.components == []
    # ... and while they ran, their messages changed too (within the pace, changes queued behind
    # others coalesce: a job that finished meanwhile goes straight to its final state)
    assert any(any(v.startswith("rendering") for v in shown(m)) for m in messages.values())

    # never more than `per_channel` edits in any window (as Discord received them; loopback HTTP
    # adds a little jitter between the bot's pacing and the sandbox's clock)
    stamps = [c.at for c in edits_in(sandbox, world.channel)]
    assert all(c.status == 200 for c in edits_in(sandbox, world.channel))
    assert len(stamps) > 2 * per_channel
    spans = [stamps[i + per_channel] - stamps[i] for i in range(len(stamps) - per_channel)]
    assert min(spans) >= window - 0.2, spans
    # ... and the pace, not a lack of changes, is what held them back: it was used to the full
    assert min(stamps[i + per_channel - 1] - stamps[i] for i in range(len(stamps) - per_channel + 1)) < window

    # finished jobs are forgotten: memory stays bounded
    edits = bot.actions.delivery.status_edits
    await sandbox.wait_for(lambda: edits.tracked[0] == 0 or None, TIMEOUT, "finished jobs to be forgotten")


# --- (b) every state change is shown; small progress is not -----------------------------------------


@pytest.fixture
async def openai_sim(sims: Simulators) -> OpenAISim:
    # a render that would take 1,000 s: the test moves it forward by hand
    return await sims.start(OpenAISim(api_key=OPENAI_KEY, job_seconds=1000.0))


async def test_each_state_change_is_shown_and_progress_only_in_coarse_steps(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, openai_sim: OpenAISim, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await harness.start(providers="openai", openai_api_key=OPENAI_KEY, openai_base_url=openai_sim.base_url)
    monkeypatch.setattr(bot.actions.delivery.status_edits, "progress_every", 0.0)  # no per-job wait between steps
    budget = await sandbox.invoke(world.guild, world.channel, world.admin, "budget set", monthly_usd="10")
    assert (await budget.wait_final_message(timeout=TIMEOUT)).content.startswith("Budget saved.")

    status = await generate(sandbox, world, world.channel, "a heron lands on a post")
    assert shown(status) == [WAITING]
    await wait_shown(sandbox, status, QUEUED)
    render = next(iter(openai_sim.jobs.values()))

    def advance(fraction: float) -> None:
        render.started -= fraction * openai_sim.job_seconds

    async def row() -> Any:
        found = await bot.db.fetchone("SELECT state, progress, status_seq FROM jobs WHERE id = 1")
        assert found is not None
        return found

    advance(0.15)  # in progress, 15 %
    first = await wait_shown(sandbox, status, r"rendering 1\d%")
    before = await row()

    advance(0.05)  # 20 %: the same 25 % step, nothing a member needs to see
    await wait_until(lambda: _progress_at_least(bot, 20), "the tracker to record 20 %")
    await one_loop_pass(bot, sandbox)
    assert (await row())["status_seq"] == before["status_seq"]  # not even marked as changed

    advance(0.40)  # 60 %: a new step
    second = await wait_shown(sandbox, status, r"rendering 6\d%")
    advance(1.0)  # done
    await wait_shown(sandbox, status, DELIVERED)

    versions = [v for v in shown(sandbox.message(status.id)) if v != SENDING]  # may be coalesced away
    assert versions == [WAITING, QUEUED, first, second, DELIVERED]
    assert sandbox.message(status.id).components == []


async def _progress_at_least(bot: Castbot, percent: int) -> bool:
    found = await bot.db.fetchone("SELECT progress FROM jobs WHERE id = 1")
    return found is not None and (found["progress"] or 0) >= percent


async def test_a_canceled_job_shows_it_on_its_status_message(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await harness.start()
    monkeypatch.setattr(bot.services.dispatcher, "per_provider", 0)  # the loop runs but sends nothing
    status = await generate(sandbox, world, world.channel, "a quiet lake")
    await one_loop_pass(bot, sandbox)
    assert shown(sandbox.message(status.id)) == [WAITING]

    click = await sandbox.click(status, "castbot:cancel:1", world.member)
    assert "canceled" in (await click.wait_final_message(timeout=TIMEOUT)).content
    await wait_shown(sandbox, status, "canceled")
    assert sandbox.message(status.id).components == []  # no Cancel button left on a canceled job
    edits = bot.actions.delivery.status_edits
    await sandbox.wait_for(lambda: edits.tracked[0] == 0 or None, TIMEOUT, "the canceled job to be forgotten")


# --- (c) a burst of held jobs ---------------------------------------------------------------------


async def test_a_burst_of_held_jobs_is_dispatched_a_few_at_a_time(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await harness.start()
    await raise_active_caps(bot, world.guild.id, 100)
    cap = bot.services.dispatcher.per_provider
    generation = bot.services.generation
    dispatch = generation.dispatch
    gate = asyncio.Event()
    started: list[int] = []
    in_flight = peak = 0

    async def watched(job_id: int) -> Any:
        """The real dispatch, held at the gate so that dispatches overlap."""
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        started.append(job_id)
        try:
            await gate.wait()
            return await dispatch(job_id)
        finally:
            in_flight -= 1

    monkeypatch.setattr(generation, "dispatch", watched)
    burst = 3 * cap + 2
    for i in range(burst):
        command = GenerateCommand(
            actor=Actor(world.member.id, world.guild.id),
            interaction_id=None,
            channel_id=world.channel.id,
            locale="en-US",
            prompt=f"burst {i}",
            seconds=2,
        )
        await generation.admit(command)
    await one_loop_pass(bot, sandbox)
    await sandbox.wait_for(lambda: in_flight == cap or None, TIMEOUT, f"{cap} dispatches in flight")
    for _ in range(3):  # more passes start nothing more while every slot is taken
        await one_loop_pass(bot, sandbox)
    assert (peak, len(started)) == (cap, cap)
    held = await bot.db.fetchone("SELECT COUNT(*) FROM jobs WHERE state = 'held'")
    assert held is not None and held[0] == burst  # the rest simply wait, held

    # a member's /generate is answered at once, although the dispatch slots are all taken
    status = await generate(sandbox, world, world.channel, "one more")
    assert shown(status) == [WAITING]

    gate.set()

    async def all_dispatched() -> bool:
        row = await bot.db.fetchone("SELECT COUNT(*) FROM jobs WHERE state IN ('held', 'submitting')")
        return row is not None and row[0] == 0

    await wait_until(all_dispatched, "every held job to be dispatched")
    assert peak == cap  # never more in flight than the cap
    assert sorted(started) == list(range(1, burst + 2))  # every job, each exactly once
    last = f"job #{burst + 1}"
    await sandbox.wait_for(  # the last one runs to the end too
        lambda: any(last in m.content for m in results_in(sandbox, world.channel)) or None, TIMEOUT, last
    )


# --- (d) Discord slow or rate limiting status edits -------------------------------------------------


async def test_the_loop_keeps_polling_and_posting_while_status_edits_are_rate_limited(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    quiet = world.guild.add_text_channel("quiet")
    await harness.start()
    # Discord answers the busy channel's status edits with a 429 "retry in 30 s": discord.py waits
    # it out inside the request, and every later edit in that channel queues behind it
    sandbox.fail_next("PATCH", rf"^/channels/{world.channel.id}/messages/\d+$", 429, retry_after=30.0)

    stalled = await generate(sandbox, world, world.channel, "a kite over the dunes")
    other = await generate(sandbox, world, quiet, "a boat in the harbour")

    # both jobs are polled to the end and their results posted, well before the 30 s are up
    await sandbox.wait_for(
        lambda: (results_in(sandbox, world.channel) and results_in(sandbox, quiet)) or None,
        TIMEOUT,
        "both results posted",
    )
    # the quiet channel's status message is edited to its final state as usual
    await sandbox.wait_for(lambda: is_final(sandbox.message(other.id)) or None, TIMEOUT, "the final edit")
    assert DELIVERED in shown(sandbox.message(other.id))
    # while the busy channel's edit is still waiting out its rate limit
    assert [c.status for c in edits_in(sandbox, world.channel)] == [429]
    assert shown(sandbox.message(stalled.id)) == [WAITING]


# --- a job over before its status message id is recorded ---------------------------------------


async def test_a_job_over_before_its_message_id_was_recorded_still_shows_its_end(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    # The member's confirmation is held up (Discord answers it 429 for 3 s) while the local
    # provider renders in 0.2 s: the job is delivered before /generate records its status message.
    sandbox.fail_next("POST", r"^/webhooks/", 429, retry_after=3.0)
    bot = await harness.start()

    async def admitted(bot: Castbot) -> bool:
        return bool(await bot.db.fetchall("SELECT id FROM jobs WHERE id = 1"))

    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a kite", seconds=2)

    def delivered() -> StoredMessage | None:
        posts = [m for m in world.channel.visible_messages if m.nonce == "castbot-job-1"]
        return posts[0] if posts else None

    # another member's command would wake the loop meanwhile: it dispatches the held job
    await wait_until(lambda: admitted(bot), "job #1 admitted")
    bot.services.wake_loop()
    result = await sandbox.wait_for(delivered, TIMEOUT, "the result posted")
    assert result.message_reference is None  # posted before its status message was known
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert "Job #1 is queued" in reply.content
    status = await sandbox.wait_for(lambda: status_messages(sandbox, world.channel).get(1), TIMEOUT, "the status")
    await wait_shown(sandbox, status, DELIVERED)
    assert sandbox.message(status.id).components == []  # no Cancel button on a delivered job


async def test_a_job_finished_but_not_posted_when_its_id_is_recorded_gets_only_its_final_edit(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    # The confirmation is held up 3 s (so the id is recorded after the render ends) and the
    # result's post 4 s (so it lands after the id is recorded). /generate must leave the status
    # message to the post: an edit of its own ("finished, posting") could land after the final one.
    sandbox.fail_next("POST", r"^/webhooks/", 429, retry_after=3.0)
    bot = await harness.start()
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a kite", seconds=2)
    status = await sandbox.wait_for(lambda: status_messages(sandbox, world.channel).get(1), TIMEOUT, "the status")
    sandbox.fail_next("POST", rf"^/channels/{world.channel.id}/messages$", 429, retry_after=4.0)

    async def rendered() -> bool:
        row = await bot.db.fetchone("SELECT state, status_message_id FROM jobs WHERE id = 1")
        assert row is not None and row["status_message_id"] is None, "confirmed before the render ended"
        return bool(row["state"] == "succeeded")

    bot.services.wake_loop()  # another member's command would wake the loop meanwhile
    await wait_until(rendered, "job #1 rendered before its id is recorded")
    assert "Job #1 is queued" in (await handle.wait_final_message(timeout=TIMEOUT)).content

    await sandbox.wait_for(lambda: result_posts(world, 1), TIMEOUT, "the result posted")
    await wait_shown(sandbox, status, DELIVERED)
    assert shown(sandbox.message(status.id)) == [WAITING, DELIVERED]
    assert sandbox.message(status.id).components == []


# --- a busy channel -----------------------------------------------------------------------------


async def test_in_a_busy_channel_the_member_is_confirmed_without_waiting_for_the_status_message(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await harness.start()
    shorten_confirm_wait(bot, monkeypatch)
    # the channel takes no post for 3 s, as when Discord's per-channel limit answers 429
    sandbox.fail_next("POST", rf"^/channels/{world.channel.id}/messages$", 429, retry_after=3.0)

    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a kite", seconds=2)
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert reply.content == "Job #1 is queued. This channel is busy: its status message will appear here shortly."
    assert status_messages(sandbox, world.channel) == {}  # confirmed while the post still waited

    # the status message still comes, its id is recorded, and it ends showing the delivery
    status = await sandbox.wait_for(lambda: status_messages(sandbox, world.channel).get(1), TIMEOUT, "the status")

    async def recorded() -> bool:
        row = await bot.db.fetchone("SELECT status_message_id FROM jobs WHERE id = 1")
        return row is not None and row["status_message_id"] == status.id

    await wait_until(recorded, "the status message's id recorded")
    await wait_shown(sandbox, status, DELIVERED)
    assert result_posts(world, 1)
    assert len(handle.followups) == 1  # one answer to the member, not a second once the post landed


async def test_a_refused_status_message_is_said_to_the_member_and_the_job_still_runs(
    sandbox: DiscordSandbox, world: World, harness: BotHarness
) -> None:
    await harness.start()
    sandbox.fail_next("POST", rf"^/channels/{world.channel.id}/messages$", 403, code=50013)

    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a kite", seconds=2)
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert reply.content.startswith("Job #1 is queued. I couldn't post its status in this channel")

    result = (await sandbox.wait_for(lambda: result_posts(world, 1), TIMEOUT, "the result posted"))[0]
    assert "your video for job #1 is ready" in result.content
    assert status_messages(sandbox, world.channel) == {}


async def test_a_status_message_refused_after_the_member_was_told_it_is_coming_is_said_too(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = await harness.start()
    shorten_confirm_wait(bot, monkeypatch)
    # a busy channel first (429 for 1 s), then the bot turns out to lack the permission to post
    sandbox.fail_next("POST", rf"^/channels/{world.channel.id}/messages$", 429, retry_after=1.0)
    sandbox.fail_next("POST", rf"^/channels/{world.channel.id}/messages$", 403, code=50013)

    handle = await sandbox.invoke(world.guild, world.channel, world.member, "generate", prompt="a kite", seconds=2)
    await handle.wait_followup(1, timeout=TIMEOUT)
    texts = [m.content for m in handle.followups]
    assert texts[0].startswith("Job #1 is queued. This channel is busy")
    assert texts[1].startswith("Job #1 is queued. I couldn't post its status in this channel")
    assert status_messages(sandbox, world.channel) == {}
