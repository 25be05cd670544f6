"""The tracking/delivery loop survives its collaborators failing: the provider (ProviderError and a
plain RuntimeError), the database (locked by another connection's write transaction) and Discord
(5xx on the result post) - and every job is still settled and delivered exactly once.

The first tests drive `Tracker.poll_once()` of the production wiring (open_bot: real SQLite, the
real OpenAI adapter, the loopback OpenAI simulator) by hand, pass by pass; the last ones run the
whole bot against the Discord sandbox and let its delivery loop (`DeliveryCog.tick`) do the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.__main__ import open_bot
from bot.app import Castbot
from bot.db import Database, SqliteDatabase
from bot.providers.base import JobSnapshot, StatusIncomplete, Unavailable, VideoProvider
from bot.services.actors import Actor
from bot.services.generation import GenerateCommand
from bot.services.tracking import PollReport
from discord_sandbox import DiscordSandbox, StoredMessage
from tests.conftest import BotHarness, Simulators, World
from tests.fakes.openai_sim import Fault, OpenAISim

OPENAI_KEY = "sk-test-123456-tracking-loop"
GUILD, CHANNEL, ADMIN, MEMBER = 9001, 9002, 9003, 9004
TIMEOUT = 10.0
SHRUNK_BUSY_MS = 50  # the bot's writer waits this long for a lock in these tests (5 s in production)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
async def sim(sims: Simulators) -> OpenAISim:
    return await sims.start(OpenAISim(api_key=OPENAI_KEY, job_seconds=0.3, poll_after_ms=50))


@pytest.fixture
async def services_bot(harness: BotHarness, sim: OpenAISim) -> AsyncIterator[Castbot]:
    """The production wiring (database, adapters, services) without a Discord connection."""
    settings = harness.settings(providers="openai", openai_api_key=OPENAI_KEY, openai_base_url=sim.base_url)
    async with open_bot(settings) as bot:
        await bot.services.budget.set_limits(Actor(ADMIN, GUILD, manage_guild=True), "20")
        yield bot


class Flaky:
    """Wraps a provider's `status`: raises `error()` for the watched ids while `failing` is set."""

    def __init__(self, real: Callable[[Sequence[str]], Awaitable[Mapping[str, JobSnapshot]]]) -> None:
        self.real = real
        self.watched: set[str] = set()
        self.every = False  # every status call, whatever it asks about
        self.failing = True
        self.calls = 0
        self.raised = 0
        self.error: Callable[[], Exception] = lambda: RuntimeError("status exploded")
        self.budget: int | None = None  # raise at most this many times, then heal

    async def __call__(self, external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        self.calls += 1
        watched = self.every or self.watched.intersection(external_ids)
        if self.failing and watched and (self.budget is None or self.raised < self.budget):
            self.raised += 1
            raise self.error()
        return await self.real(external_ids)


def flaky_status(provider: VideoProvider, monkeypatch: pytest.MonkeyPatch) -> Flaky:
    flaky = Flaky(provider.status)
    monkeypatch.setattr(provider, "status", flaky)
    return flaky


@contextlib.asynccontextmanager
async def locked(db: Database) -> AsyncIterator[aiosqlite.Connection]:
    """Another connection holds a write transaction (BEGIN IMMEDIATE) on the bot's database file;
    the bot's writer gives up after SHRUNK_BUSY_MS with a real "database is locked"."""
    assert isinstance(db, SqliteDatabase)
    await db.connection.execute(f"PRAGMA busy_timeout = {SHRUNK_BUSY_MS}")
    other = await aiosqlite.connect(str(db.path), isolation_level=None)
    try:
        await other.execute("BEGIN IMMEDIATE")
        yield other
        await other.execute("ROLLBACK")
    finally:
        await other.close()


async def admit_and_send(bot: Castbot, prompt: str, **options: Any) -> int:
    generation = bot.services.generation
    command = GenerateCommand(
        actor=Actor(MEMBER, GUILD), interaction_id=None, channel_id=CHANNEL, locale="en-US", prompt=prompt, **options
    )
    admitted = await generation.admit(command)
    job = await generation.dispatch(admitted.job.id)
    assert job.state in ("queued", "running"), (job.state, job.error)
    assert job.external_id
    return job.id


async def state(bot: Castbot, job_id: int) -> str:
    return (await bot.services.generation.job_row(job_id)).state


async def drive(bot: Castbot, done: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> list[PollReport]:
    """Run tracker passes until `done()`; every pass must complete without raising."""
    reports: list[PollReport] = []
    deadline = time.monotonic() + timeout
    while not await done():
        assert time.monotonic() < deadline, f"not done after {timeout}s; last report {reports[-1:]}"
        reports.append(await bot.services.tracker.poll_once())
        await asyncio.sleep(0.02)
    return reports


async def ledger(db: Database, job_id: int) -> list[tuple[str, int]]:
    rows = await db.fetchall("SELECT kind, amount_micros FROM ledger WHERE job_id = ? ORDER BY id", (job_id,))
    return [(r["kind"], r["amount_micros"]) for r in rows]


async def spent(db: Database, guild_id: int) -> tuple[int, int]:
    row = await db.fetchone(
        "SELECT held_micros, spent_micros FROM budget_counters WHERE scope = 'guild' AND scope_id = ?",
        (str(guild_id),),
    )
    assert row is not None
    return int(row["held_micros"]), int(row["spent_micros"])


async def assert_settled_once(bot: Castbot, job_ids: Sequence[int], guild_id: int = GUILD) -> None:
    total = 0
    for job_id in job_ids:
        job = await bot.services.generation.job_row(job_id)
        assert job.cost_micros is not None and job.cost_micros > 0
        kinds = [k for k, _ in await ledger(bot.db, job_id)]
        assert kinds.count("capture") == 1, kinds
        assert dict(await ledger(bot.db, job_id))["capture"] == job.cost_micros
        total += job.cost_micros
    assert await spent(bot.db, guild_id) == (0, total)


# --- Tracker.poll_once against a failing provider -------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(lambda: Unavailable("openai", "status endpoint is down"), id="ProviderError"),
        pytest.param(lambda: RuntimeError("a bug in the adapter"), id="RuntimeError"),
    ],
)
async def test_a_status_call_that_raises_is_contained_to_its_job(
    services_bot: Castbot, sim: OpenAISim, monkeypatch: pytest.MonkeyPatch, error: Callable[[], Exception]
) -> None:
    bot = services_bot
    flaky = flaky_status(bot.providers["openai"], monkeypatch)
    flaky.error = error
    first = await admit_and_send(bot, "a fox crosses a frozen river")
    second = await admit_and_send(bot, "a heron waits in the reeds")
    flaky.watched.add((await bot.services.generation.job_row(first)).external_id or "")

    # the other job is tracked to the end while every status call about the first one raises
    await drive(bot, lambda: _succeeded(bot, second))
    assert flaky.raised >= 2  # looked at again and again, never dropped
    job = await bot.services.generation.job_row(first)
    assert job.state in ("queued", "running") and job.external_id
    assert job.next_poll_at is not None and job.next_poll_at > job.updated_at - 1  # rescheduled, not lost
    assert [k for k, _ in await ledger(bot.db, first)] == ["hold"]

    flaky.failing = False
    await drive(bot, lambda: _succeeded(bot, first))
    await assert_settled_once(bot, [first, second])
    for job_id in (first, second):
        path = Path((await bot.services.generation.job_row(job_id)).result_path or "")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sim.video_sha256


async def test_a_partly_read_status_settles_what_was_read_and_asks_again_for_the_rest(
    services_bot: Castbot, sim: OpenAISim, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = services_bot
    provider = bot.providers["openai"]
    real = provider.status
    first = await admit_and_send(bot, "a fox crosses a frozen river")
    second = await admit_and_send(bot, "a heron waits in the reeds")
    unread = (await bot.services.generation.job_row(first)).external_id or ""
    calls: list[list[str]] = []

    async def partly(external_ids: Sequence[str]) -> Mapping[str, JobSnapshot]:
        # the provider reads every job but the first one, as the OpenAI adapter reports a walk
        # of its video list whose single lookup of an older job failed
        calls.append(list(external_ids))
        answered = await real([i for i in external_ids if i != unread])
        if unread in external_ids:
            raise StatusIncomplete("openai", "lookup failed", retry_after=0.01, answered=answered)
        return answered

    monkeypatch.setattr(provider, "status", partly)
    await drive(bot, lambda: _succeeded(bot, second))
    assert any(unread in c and len(c) > 1 for c in calls), "both asked about together"
    job = await bot.services.generation.job_row(first)
    assert job.state in ("queued", "running") and job.poll_failures == 0  # not taken as unknown
    assert [k for k, _ in await ledger(bot.db, first)] == ["hold"]
    monkeypatch.setattr(provider, "status", real)
    await drive(bot, lambda: _succeeded(bot, first))
    await assert_settled_once(bot, [first, second])


async def test_a_list_status_walk_asks_about_every_job_in_flight_at_most_once_per_poll_min(
    harness: BotHarness, sim: OpenAISim
) -> None:
    settings = harness.settings(
        providers="openai", openai_api_key=OPENAI_KEY, openai_base_url=sim.base_url, poll_min_seconds=30.0
    )
    async with open_bot(settings) as bot:
        await bot.services.budget.set_limits(Actor(ADMIN, GUILD, manage_guild=True), "20")
        jobs = []
        for i in range(4):  # four members: the per-member active-job limit stays out of the way
            member = Actor(MEMBER + i, GUILD)
            command = GenerateCommand(
                actor=member, interaction_id=None, channel_id=CHANNEL, locale="en-US", prompt=f"rain {i}"
            )
            admitted = await bot.services.generation.admit(command)
            assert (await bot.services.generation.dispatch(admitted.job.id)).external_id
            jobs.append(admitted.job.id)
        now = time.time()
        # one is due; the others are not, yet the same list page answers them all
        schedule = {jobs[0]: now - 1, jobs[1]: now + 0.5, jobs[2]: now + 10, jobs[3]: now + 600}
        async with bot.db.transaction() as conn:
            for job_id, at in schedule.items():
                await conn.execute("UPDATE jobs SET next_poll_at = ? WHERE id = ?", (at, job_id))
        sim.requests.clear()

        report = await bot.services.tracker.poll_once()

        assert report.polled == 4 and report.errors == 0
        assert len(sim.requests_to("GET", "/videos")) == 1  # one list page for the four
        assert not [r for r in sim.requests if r.path.startswith("/v1/videos/")]
        rows = [await bot.services.generation.job_row(job_id) for job_id in jobs]
        assert all(r.next_poll_at is not None and r.next_poll_at >= now + 30 for r in rows)  # POLL_MIN floor

        # a job falling due before POLL_MIN has passed waits for the next walk instead of starting one
        async with bot.db.transaction() as conn:
            await conn.execute("UPDATE jobs SET next_poll_at = ? WHERE id = ?", (time.time() - 1, jobs[2]))
        report = await bot.services.tracker.poll_once()
        assert report.polled == 0 and len(sim.requests_to("GET", "/videos")) == 1
        postponed = await bot.services.generation.job_row(jobs[2])
        assert postponed.next_poll_at == pytest.approx(now + 30, abs=2)  # the next walk


async def test_status_and_download_faults_on_the_wire_are_retried(services_bot: Castbot, sim: OpenAISim) -> None:
    bot = services_bot
    job_id = await admit_and_send(bot, "rain on a tin roof")
    sim.script("retrieve", Fault.SERVER_ERROR)
    sim.script("retrieve", Fault.MALFORMED_JSON)
    sim.script("retrieve", Fault.CONNECTION_RESET)
    sim.script("content", Fault.CONNECTION_RESET)  # cut mid-body
    sim.script("content", Fault.UNAVAILABLE)

    await drive(bot, lambda: _succeeded(bot, job_id))

    retrieves = sim.requests_to("GET", "")
    contents = [r for r in retrieves if r.path.endswith("/content")]
    assert len(contents) == 3  # two failed downloads, then the good one
    assert len([r for r in retrieves if not r.path.endswith("/content")]) >= 4
    job = await bot.services.generation.job_row(job_id)
    assert Path(job.result_path or "").read_bytes() == sim.video_bytes
    await assert_settled_once(bot, [job_id])


async def test_a_download_that_raises_unexpectedly_is_retried(
    services_bot: Castbot, sim: OpenAISim, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = services_bot
    provider = bot.providers["openai"]
    real = provider.download
    calls = 0

    async def broken_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk hiccup")
        return await real(*args, **kwargs)

    monkeypatch.setattr(provider, "download", broken_once)
    job_id = await admit_and_send(bot, "fog over the bay")
    reports = await drive(bot, lambda: _succeeded(bot, job_id))
    assert calls == 2
    assert sum(r.errors for r in reports) == 1
    await assert_settled_once(bot, [job_id])


# --- Tracker.poll_once against a locked database --------------------------------------------------


async def test_a_locked_database_delays_settlement_but_never_doubles_it(
    services_bot: Castbot, sim: OpenAISim, caplog: pytest.LogCaptureFixture
) -> None:
    bot = services_bot
    job_id = await admit_and_send(bot, "a lighthouse in a storm")
    # let the render finish at the provider before the database gets locked
    await _wait(lambda: _sim_done(sim))

    async with locked(bot.db):
        with caplog.at_level(logging.ERROR, logger="bot.services.tracking"):
            first = await bot.services.tracker.poll_once()
            second = await bot.services.tracker.poll_once()
        # each pass completed; the job could not be settled and is simply looked at again
        assert first.errors == second.errors == 1
        assert first.succeeded == second.succeeded == []
        assert "database is locked" in caplog.text
        assert await state(bot, job_id) in ("queued", "running")
        assert [k for k, _ in await ledger(bot.db, job_id)] == ["hold"]
        held, _ = await spent(bot.db, GUILD)
        assert held > 0

    reports = await drive(bot, lambda: _succeeded(bot, job_id))
    assert sum(len(r.succeeded) for r in reports) == 1
    await assert_settled_once(bot, [job_id])
    # one more pass finds nothing to do: settled exactly once
    assert await bot.services.tracker.poll_once() == PollReport()
    await assert_settled_once(bot, [job_id])


async def test_a_provider_error_while_the_database_is_locked_does_not_abort_the_pass(
    services_bot: Castbot, sim: OpenAISim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure is fed to the breaker, which writes to the database: that write failing too
    must stay contained like any other."""
    bot = services_bot
    flaky = flaky_status(bot.providers["openai"], monkeypatch)
    flaky.error = lambda: Unavailable("openai", "status endpoint is down")
    job_id = await admit_and_send(bot, "snow on pine trees")
    flaky.watched.add((await bot.services.generation.job_row(job_id)).external_id or "")
    await _wait(lambda: _due(bot, job_id))

    async with locked(bot.db):
        report = await bot.services.tracker.poll_once()  # must not raise
        assert flaky.raised == 1
        assert report.succeeded == []

    flaky.failing = False
    await drive(bot, lambda: _succeeded(bot, job_id))
    await assert_settled_once(bot, [job_id])


# --- the running bot: DeliveryCog.tick through the sandbox ---------------------------------------


async def start_bot(harness: BotHarness, sim: OpenAISim, monkeypatch: pytest.MonkeyPatch) -> Castbot:
    # The loop waits 5 s before retrying a failed post; a test has no reason to wait that long.
    monkeypatch.setattr("bot.services.delivery.RETRY_SECONDS", (0.05, 0.1))
    return await harness.start(providers="openai", openai_api_key=OPENAI_KEY, openai_base_url=sim.base_url)


async def run(sandbox: DiscordSandbox, world: World, who: Any, command: str, **options: Any) -> StoredMessage:
    handle = await sandbox.invoke(world.guild, world.channel, who, command, **options)
    return await handle.wait_final_message(timeout=TIMEOUT)


async def generate(sandbox: DiscordSandbox, world: World, prompt: str) -> StoredMessage:
    budget = await run(sandbox, world, world.admin, "budget set", monthly_usd="10")
    assert budget.content.startswith("Budget saved."), budget.content
    queued = await run(sandbox, world, world.member, "generate", prompt=prompt)
    assert "Job #1 is queued" in queued.content, queued.content
    return await sandbox.wait_for(
        lambda: next((m for m in world.channel.visible_messages if m.embeds and m.embeds[0]["title"] == "Job #1"), None)
    )


def results(sandbox: DiscordSandbox, world: World) -> list[StoredMessage]:
    return [
        m
        for m in world.channel.visible_messages
        if m.author.id == sandbox.bot.id and "job #1" in m.content and m.message_reference
    ]


def result_posts(sandbox: DiscordSandbox, world: World) -> list[Any]:
    return [
        c
        for c in sandbox.calls_to("POST", rf"^/channels/{world.channel.id}/messages$")
        if "job #1" in str(c.body.get("content") or "")
    ]


async def wait_delivered(bot: Castbot, timeout: float = TIMEOUT) -> Any:
    async def delivered() -> bool:
        row = await bot.db.fetchone("SELECT state, notified_at FROM jobs WHERE id = 1")
        return row is not None and row["state"] == "delivered" and row["notified_at"] is not None

    await _wait(delivered, timeout)
    return await bot.services.generation.job_row(1)


@pytest.mark.parametrize("status", [500, 503])
async def test_a_result_post_answered_5xx_is_retried_and_lands_once(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    sim: OpenAISim,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
) -> None:
    bot = await start_bot(harness, sim, monkeypatch)
    status_message = await generate(sandbox, world, "a paper boat in a gutter")
    # discord.py itself retries a 500 after a second; a 503 reaches our loop, which retries later
    times = 1 if status == 500 else 2
    sandbox.fail_next("POST", rf"^/channels/{world.channel.id}/messages$", status, times=times)

    job = await wait_delivered(bot)
    posts = result_posts(sandbox, world)
    assert [c.status for c in posts] == [status] * times + [200]
    assert all(c.injected for c in posts[:-1])
    (result,) = results(sandbox, world)
    assert result.attachments[0].data == sim.video_bytes
    assert int((result.message_reference or {})["message_id"]) == status_message.id
    assert job.result_message_id == result.id
    await assert_settled_once(bot, [1], world.guild.id)


async def test_a_database_locked_right_after_the_post_does_not_post_twice(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, sim: OpenAISim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The post went out but recording it failed: the next pass posts again with the same nonce
    and Discord answers with the first message, so the channel still shows one."""
    bot = await start_bot(harness, sim, monkeypatch)
    delivery = bot.services.delivery
    real = delivery.mark_posted
    lock: contextlib.AbstractAsyncContextManager[aiosqlite.Connection] | None = None
    calls = 0

    async def mark_posted(job_id: int, message_id: int | None) -> None:
        nonlocal lock, calls
        calls += 1
        if calls == 1:  # another process grabs the database just as the post came back
            lock = locked(bot.db)
            await lock.__aenter__()
        if calls == 3 and lock is not None:
            await lock.__aexit__(None, None, None)
            lock = None
        await real(job_id, message_id)

    monkeypatch.setattr(delivery, "mark_posted", mark_posted)
    await generate(sandbox, world, "a tram in the snow")
    job = await wait_delivered(bot)

    assert calls == 3  # two recordings failed on the lock, the third went through
    posts = result_posts(sandbox, world)
    assert len(posts) == 3 and all(c.status == 200 for c in posts)
    assert len({c.body["nonce"] for c in posts}) == 1
    assert len({c.response["id"] for c in posts}) == 1  # the same message every time
    (result,) = results(sandbox, world)
    assert job.result_message_id == result.id
    await assert_settled_once(bot, [1], world.guild.id)


async def test_the_running_loop_survives_every_collaborator_failing(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    sim: OpenAISim,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.job_seconds = 60.0  # rendering until the test says otherwise
    bot = await start_bot(harness, sim, monkeypatch)
    flaky = flaky_status(bot.providers["openai"], monkeypatch)
    errors = [
        RuntimeError("adapter bug"),
        RuntimeError("adapter bug"),
        Unavailable("openai", "down"),
        Unavailable("openai", "down"),
    ]
    flaky.error = lambda: errors[flaky.raised - 1]
    flaky.budget = len(errors)
    flaky.every = True
    await generate(sandbox, world, "a kite above the dunes")
    sandbox.fail_next("POST", rf"^/channels/{world.channel.id}/messages$", 503)

    with caplog.at_level(logging.ERROR):
        # 1. the provider's status call raises, first a plain exception, then a ProviderError
        await _wait(lambda: _true(flaky.raised == len(errors)))
        # 2. the database is locked while the job finishes: the loop keeps looking at the finished
        #    job but cannot settle it until the lock goes away
        async with locked(bot.db):
            sim.job_seconds = 0.01  # the render is done now
            seen = flaky.calls
            await _wait(lambda: _true(flaky.calls >= seen + 2))
            assert await state(bot, 1) in ("queued", "running")
            assert [k for k, _ in await ledger(bot.db, 1)] == ["hold"]
        # 3. the first result post gets a 503
        job = await wait_delivered(bot)

    assert "database is locked" in caplog.text
    assert [c.status for c in result_posts(sandbox, world)] == [503, 200]
    (result,) = results(sandbox, world)
    assert result.attachments[0].data == sim.video_bytes
    assert job.result_message_id == result.id
    await assert_settled_once(bot, [1], world.guild.id)

    # the loop is still alive: a second job goes through without any fault
    second = await run(sandbox, world, world.member, "generate", prompt="the kite lands")
    assert "Job #2 is queued" in second.content
    await _wait(lambda: _true(any("job #2" in m.content for m in world.channel.visible_messages)))
    await assert_settled_once(bot, [1, 2], world.guild.id)


# --- small helpers --------------------------------------------------------------------------------


async def _true(value: bool) -> bool:
    return value


async def _succeeded(bot: Castbot, job_id: int) -> bool:
    return await state(bot, job_id) == "succeeded"


async def _due(bot: Castbot, job_id: int) -> bool:
    job = await bot.services.generation.job_row(job_id)
    return job.next_poll_at is None or job.next_poll_at <= time.time()


async def _sim_done(sim: OpenAISim) -> bool:
    return all(job.state(sim.job_seconds)[0] == "completed" for job in sim.jobs.values())


async def _wait(done: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not await done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
