"""Provider callbacks end to end: the real bot with its HTTP endpoint on loopback and PUBLIC_URL
pointing at it, the simulators calling back when a job ends.

A callback is a wake-up only: the result is posted about a second after the render ends (POLL_MAX
is 30 s here, so only the callback can explain it) with at most one status read after it; and
forged, replayed, misdirected, oversized or flooding callbacks change nothing but a counter while
the bot keeps answering commands.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.app import Castbot
from discord_sandbox import DiscordSandbox
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, World
from tests.e2e.test_generate_providers import (
    STARTERS,
    TIMEOUT,
    Sim,
    cast,
    generate,
    ledger,
    result_posts,
    run,
    set_budget,
    start_bot,
    wait_job,
    wait_result,
)
from tests.fakes.fal_sim import FalSim
from tests.fakes.gemini_sim import GeminiSim

pytestmark = pytest.mark.e2e

POLL_MAX = 30.0  # far longer than a test: a prompt post can only come from a callback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_reads(sim: Sim) -> Callable[[], int]:
    server = sim.server
    if sim.name == "fal":
        return lambda: sum(1 for r in server.recorded("queue", "GET") if r.path.endswith("/status"))
    if sim.name == "kling":
        return lambda: int(server.status_requests)
    return lambda: len(server.recorded("GET", "/v1beta/interactions/"))


async def start_hooked(harness: BotHarness, sim: Sim, monkeypatch: pytest.MonkeyPatch) -> Castbot:
    port = free_port()
    return await start_bot(
        harness,
        sim,
        monkeypatch,
        http_host="127.0.0.1",
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
        poll_max_seconds=POLL_MAX,
    )


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("hook-clips") / "hero.mp4"
    return make_clip(path, seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()


@pytest.fixture(params=["kling", "gemini", "fal-wan"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Sim]:
    started = await STARTERS[request.param]()
    yield started
    await started.close()


@pytest.fixture
async def fal() -> AsyncIterator[Sim]:
    started = await STARTERS["fal-wan"]()
    yield started
    await started.close()


async def test_a_result_is_posted_within_a_second_of_the_callback(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch, sim: Sim, clip_bytes: bytes
) -> None:
    bot = await start_hooked(harness, sim, monkeypatch)
    await set_budget(sandbox, world)
    subject = await cast(sandbox, world, sim, clip_bytes)
    reads = status_reads(sim)
    at_callback: list[int] = []
    poster = sim.server.callbacks
    original = poster.post

    async def post(url: str, body: bytes, headers: Any) -> int | None:
        at_callback.append(reads())
        status: int | None = await original(url, body, headers)
        return status

    monkeypatch.setattr(poster, "post", post)
    await generate(sandbox, world, f"{subject} walks at dawn")
    await wait_result(sandbox, world, timeout=TIMEOUT)
    posted = time.monotonic()
    last = poster.sent[-1]
    assert last.status == 200 and "/hooks/" in last.url
    assert posted - last.at < 1.5, f"posted {posted - last.at:.2f}s after the callback"
    assert reads() - at_callback[-1] <= 1  # the loop read the job once after the wake-up
    row = await wait_job(bot, 1, lambda r: r["state"] == "delivered")
    assert row["callback_token"] and row["callback_token"] in last.url
    assert "capture" in await ledger(bot)


async def test_a_callback_is_posted_while_another_jobs_status_read_hangs(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch, fal: Sim, clip_bytes: bytes
) -> None:
    """Job 1's result read stalls at fal (longer than the test); job 2, submitted meanwhile, is
    polled on its callback, downloaded and posted all the same. With one tracking pass at a time,
    job 2 waited for the stalled read: it was not even sent to fal before it ended."""
    server: FalSim = fal.server
    server.hang_seconds = 120.0  # only the simulator's close ends it
    server.add_fault("result", "read_timeout")  # the first result read: job 1's
    bot = await start_hooked(harness, fal, monkeypatch)
    await set_budget(sandbox, world)
    subject = await cast(sandbox, world, fal, clip_bytes)
    await generate(sandbox, world, f"{subject} walks at dawn")
    await sandbox.wait_for(lambda: server.jobs or None, TIMEOUT, "job 1 at fal")
    (first,) = server.jobs

    def result_reads(request_id: str) -> list[Any]:
        return [r for r in server.recorded("queue", "GET") if request_id in r.path and not r.path.endswith("/status")]

    await sandbox.wait_for(lambda: result_reads(first) or None, TIMEOUT, "job 1's result read")
    queued = await run(sandbox, world, world.member, "generate", prompt=f"{subject} waves goodbye")
    assert "Job #2 is queued" in queued.content, queued.content
    await wait_result(sandbox, world, 2, timeout=TIMEOUT)
    assert 1 in bot.services.tracker.in_flight  # job 1's read is still hanging: job 2 did not wait for it
    assert not result_posts(sandbox, world, 1)
    second = await wait_job(bot, 2, lambda r: r["state"] == "delivered")
    assert second["callback_token"] and any(second["callback_token"] in c.url for c in server.callbacks.sent)


async def fal_job(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch, fal: Sim, clip: bytes, *outcomes: str
) -> tuple[Castbot, FalSim, str]:
    """The bot with fal hooked; a job (or several) submitted; returns the bot, the sim, the base URL."""
    bot = await start_hooked(harness, fal, monkeypatch)
    server: FalSim = fal.server
    if outcomes:
        server.script_job(*outcomes)
    await set_budget(sandbox, world)
    subject = await cast(sandbox, world, fal, clip)
    await generate(sandbox, world, f"{subject} walks at dawn")
    assert bot.settings.public_url
    return bot, server, bot.settings.public_url


async def settled(bot: Castbot, fal: Sim) -> None:
    """The job is with fal and its first status read is done: the next is POLL_MAX away."""
    await wait_job(bot, 1, lambda r: r["state"] in ("queued", "running"))
    reads = status_reads(fal)
    deadline = time.monotonic() + TIMEOUT
    while reads() < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)


async def snapshot(bot: Castbot) -> list[dict[str, Any]]:
    """What a callback must never change (a status read may touch updated_at and the poll schedule)."""
    rows = await bot.db.fetchall("SELECT * FROM jobs ORDER BY id")
    moving = {"next_poll_at", "updated_at", "version", "poll_failures"}
    return [{k: v for k, v in dict(r).items() if k not in moving} for r in rows]


async def counted(bot: Castbot, outcome: str) -> float:
    value = bot.services.metrics.registry.get_sample_value(
        "castbot_webhooks_received_total", {"provider": "fal", "outcome": outcome}
    )
    return value or 0.0


async def test_hostile_callbacks_change_nothing_but_a_counter(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch, fal: Sim, clip_bytes: bytes
) -> None:
    bot, server, base = await fal_job(sandbox, world, harness, monkeypatch, fal, clip_bytes, "stuck", "stuck")
    await settled(bot, fal)
    row = await bot.db.fetchone("SELECT callback_token FROM jobs WHERE id = 1")
    assert row is not None
    hook = f"{base}/hooks/fal/{row['callback_token']}"
    (request_id,) = server.jobs
    body = json.dumps({"request_id": request_id, "status": "OK", "payload": {"video": {"url": "x"}}}).encode()
    reads = status_reads(fal)
    before, reads_before, messages_before = await snapshot(bot), reads(), len(world.channel.visible_messages)
    async with httpx.AsyncClient(timeout=10) as http:
        # forged: signed by another key
        forger = FalSim()
        forger.webhook_key = Ed25519PrivateKey.generate()
        forged = await http.post(hook, content=body, headers=forger.sign(request_id, body))
        assert forged.status_code == 401
        # an unknown token (validly signed: fal's signature is checked first), a 1 MB body
        unknown = await http.post(f"{base}/hooks/fal/not-a-token", content=body, headers=server.sign(request_id, body))
        assert unknown.status_code == 404
        big = await http.post(hook, content=b"x" * (1024 * 1024), headers=server.sign(request_id, body))
        assert big.status_code == 413
        # a valid signature, but stale
        stale = await http.post(hook, content=body, headers=server.sign(request_id, body, int(time.time()) - 600))
        assert stale.status_code == 401
    await asyncio.sleep(0.3)
    assert reads() == reads_before  # none of them woke the job
    assert await snapshot(bot) == before
    assert len(world.channel.visible_messages) == messages_before
    assert await counted(bot, "forged") == 2 and await counted(bot, "too_large") == 1
    assert await counted(bot, "unknown") == 1


async def test_a_replayed_or_misdirected_callback_only_makes_one_job_look_again(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch, fal: Sim, clip_bytes: bytes
) -> None:
    bot, server, base = await fal_job(sandbox, world, harness, monkeypatch, fal, clip_bytes, "stuck")
    await settled(bot, fal)
    row = await bot.db.fetchone("SELECT callback_token FROM jobs WHERE id = 1")
    assert row is not None
    hook = f"{base}/hooks/fal/{row['callback_token']}"
    # another job's callback, validly signed, sent to this job's token: only this job is read again
    body = json.dumps({"request_id": "someone-else", "status": "OK", "payload": None}).encode()
    reads = status_reads(fal)
    before, reads_before = await snapshot(bot), reads()
    async with httpx.AsyncClient(timeout=10) as http:
        answers = [(await http.post(hook, content=body, headers=server.sign("someone-else", body))).status_code]
        # ... and replayed 100 times
        for _ in range(99):
            answers.append((await http.post(hook, content=body, headers=server.sign("someone-else", body))).status_code)
    assert set(answers) <= {200, 429}
    await asyncio.sleep(bot.settings.poll_min_seconds * 4 + 0.5)
    # one wake-up: a replay of the same body is a duplicate, never a read per replay
    assert reads() - reads_before == 1
    assert await snapshot(bot) == before  # still running: the provider says so
    assert await ledger(bot) == {"hold": (await ledger(bot))["hold"]}


FLOOD = """
import asyncio, json, sys, time
import aiohttp

async def flood(base):
    statuses = []
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def post(url):
            async with http.post(url, data=b'{"request_id": "x"}') as response:
                return response.status
        start = time.monotonic()
        for second in range(2):
            batch = [post(f"{base}/hooks/fal/guess-{second}-{i}") for i in range(1000)]
            statuses.extend(await asyncio.gather(*batch))
            await asyncio.sleep(max(0.0, start + second + 1 - time.monotonic()))
        print(json.dumps({"statuses": statuses, "elapsed": time.monotonic() - start}))

asyncio.run(flood(sys.argv[1]))
"""


async def test_a_flood_from_one_source_is_refused_and_commands_still_answer(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch, fal: Sim, clip_bytes: bytes
) -> None:
    bot, _, base = await fal_job(sandbox, world, harness, monkeypatch, fal, clip_bytes, "stuck")
    await settled(bot, fal)
    before = await snapshot(bot)
    # the flood comes from another process, as an attacker's would: the bot's loop serves it, but
    # does not also run the 2,000 requests' client side
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD, base, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(0.2)
    reply = await run(sandbox, world, world.member, "budget show")
    assert reply.content or reply.embeds
    out, err = await asyncio.wait_for(flooder.communicate(), 60)
    assert flooder.returncode == 0, err.decode()
    flooded = json.loads(out)
    statuses, elapsed = flooded["statuses"], [flooded["elapsed"]]
    assert statuses.count(429) >= 2000 - 50 - 20 * elapsed[0] - 20  # a burst of 50, then 20 a second
    assert set(statuses) <= {401, 429}  # unsigned guesses at fal's route: refused before any lookup
    assert await snapshot(bot) == before
    assert await counted(bot, "rate_limited") == statuses.count(429)


@pytest.mark.parametrize("sim", ["gemini"], indirect=True)
async def test_a_gemini_jwt_wakes_only_the_job_whose_url_it_was_signed_for(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch, sim: Sim, clip_bytes: bytes
) -> None:
    gemini = sim
    bot = await start_hooked(harness, gemini, monkeypatch)
    server: GeminiSim = gemini.server
    server.script_outcome("stuck", "stuck")
    await set_budget(sandbox, world)
    subject = await cast(sandbox, world, gemini, clip_bytes)
    await generate(sandbox, world, f"{subject} walks at dawn")
    queued = await run(sandbox, world, world.member, "generate", prompt=f"{subject} walks at dusk")
    assert "Job #2 is queued" in queued.content
    for job in (1, 2):
        await wait_job(bot, job, lambda r: r["state"] in ("queued", "running"))
    await settled(bot, gemini)
    rows = await bot.db.fetchall("SELECT callback_token FROM jobs ORDER BY id")
    base = bot.settings.public_url
    first, second = (f"{base}/hooks/gemini/{r['callback_token']}" for r in rows)
    body = json.dumps({"type": "interaction.completed", "version": "v1", "data": {"id": "x"}}).encode()
    reads = status_reads(gemini)
    before, reads_before = await snapshot(bot), reads()
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with httpx.AsyncClient(timeout=10) as http:
        # the first job's genuine JWT sent to the second job's URL; a forged key under Google's kid;
        # a stale JWT; none at all: each refused before any job is looked up
        for url, headers in (
            (second, server.webhook_headers(first)),
            (first, server.webhook_headers(first, key=forger)),
            (first, server.webhook_headers(first, at=time.time() - 1200)),
            (first, {}),
        ):
            assert (await http.post(url, content=body, headers=headers)).status_code == 401
    await asyncio.sleep(0.3)
    assert reads() == reads_before and await snapshot(bot) == before
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(first, content=body, headers=server.webhook_headers(first))).status_code == 200
    deadline = time.monotonic() + TIMEOUT
    while reads() == reads_before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert reads() - reads_before == 1  # the first job, once; the second still waits for POLL_MAX
    assert await snapshot(bot) == before
