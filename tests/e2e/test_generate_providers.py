"""/generate end to end against each provider simulator's real wire protocol.

The real bot talks to the Discord sandbox and to one loopback provider simulator (OpenAI Videos
API, a Sora relay, Kling, Gemini Omni, fal's queue with three of its models). Each test drives real slash
commands: characters are created from a real clip, a moderator sets the budget, a member
generates; we check what lands in the channel, what the simulator received, and what the budget
ledger captured or released.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.app import Castbot
from bot.media.fit import probe, verify
from bot.providers.base import GenerationRequest, Orientation, Quality
from bot.providers.pricing import usd_to_micros
from bot.services.encoding import Fitted
from bot.ui.generation import human_size
from discord_sandbox import MIB, Call, DiscordSandbox, StoredMessage
from discord_sandbox.clips import make_clip
from tests.conftest import BotHarness, World
from tests.fakes.fal_sim import FalSim
from tests.fakes.gemini_sim import GeminiSim
from tests.fakes.kling_sim import MODERATION_MESSAGE, KlingSim
from tests.fakes.noisy_video import make_noisy_video
from tests.fakes.openai_sim import Fault, OpenAISim
from tests.fakes.relay_sim import Fault as RelayFault
from tests.fakes.relay_sim import Outcome, RelaySim

pytestmark = pytest.mark.e2e

# fal is one provider with many engines: the test runs three of them, each its own case
FAL_MODELS = {
    "fal-wan": "wan/v2.6/reference-to-video",
    "fal-kling-o3": "fal-ai/kling-video/o3/standard/reference-to-video",
    "fal-seedance": "bytedance/seedance-2.0/reference-to-video",
}
PROVIDERS = ("openai", "relay", "kling", "gemini", *FAL_MODELS)
OPENAI_KEY = "sk-test-123456-e2e-generate"
RELAY_KEY = "sk-relay-e2e-generate-0123456789"
KLING_KEY = "api-key-kling-e2e-generate-0123"
FAL_KEY = "fal-key-e2e-generate:0123456789abcdef"
GEMINI_KEY = "AIzaSy-e2e-generate-0123456789abcdef"
SHORT_JOB = 0.3  # seconds a simulated render takes, unless a test wants to watch progress
TIMEOUT = 15.0  # generous for a loaded 2-core machine; the tests finish well before
FIT_TIMEOUT = 120.0  # a result re-encoded to fit the channel: a 30 MB 1080p video takes ~6 s alone


# --- one simulator behind a common face -----------------------------------------------------------


@dataclass
class Sim:
    """A running provider simulator and how to script it, the same way for every provider."""

    name: str
    server: Any
    bot_settings: dict[str, Any]
    reports_progress: bool
    set_job_seconds: Callable[[float], None]
    served: Callable[[], bytes]
    serve: Callable[[bytes], None]
    refuse_at_create: Callable[[], None]
    refuse_at_end: Callable[[], None]
    closers: list[Callable[[], Any]] = field(default_factory=list)
    needs_character: bool = False  # a reference-to-video engine: no video without an @name

    async def close(self) -> None:
        for close in self.closers:
            await close()


async def start_openai() -> Sim:
    sim = await OpenAISim(api_key=OPENAI_KEY, job_seconds=SHORT_JOB).start()

    def serve(data: bytes) -> None:
        sim.video_bytes = data

    def job_seconds(value: float) -> None:
        sim.job_seconds = value

    return Sim(
        name="openai",
        server=sim,
        bot_settings={"openai_api_key": OPENAI_KEY, "openai_base_url": sim.base_url},
        reports_progress=True,
        set_job_seconds=job_seconds,
        served=lambda: sim.video_bytes,
        serve=serve,
        refuse_at_create=lambda: sim.script("create", Fault.MODERATION),
        refuse_at_end=lambda: sim.script("create", Fault.MODERATION_AT_END),
        closers=[sim.close],
    )


async def start_relay() -> Sim:
    sim = await RelaySim(api_key=RELAY_KEY, job_seconds=SHORT_JOB).start()

    def serve(data: bytes) -> None:
        sim.video = data

    def job_seconds(value: float) -> None:
        sim.job_seconds = value

    return Sim(
        name="relay",
        server=sim,
        bot_settings={"relay_api_key": RELAY_KEY, "relay_base_url": sim.base_url},
        reports_progress=True,
        set_job_seconds=job_seconds,
        served=lambda: sim.video,
        serve=serve,
        refuse_at_create=lambda: sim.fail("create_video", RelayFault.moderation()),
        refuse_at_end=lambda: sim.queue_outcomes(Outcome.MODERATION),
        closers=[sim.close],
    )


async def start_kling() -> Sim:
    # element_seconds=0: the element is ready at the adapter's first look (it polls every 2 s)
    sim = KlingSim(api_key=KLING_KEY, element_seconds=0.0, video_seconds=SHORT_JOB)
    await sim.start()

    def serve(data: bytes) -> None:
        sim.video_bytes = data

    def job_seconds(value: float) -> None:
        sim.video_seconds = value

    return Sim(
        name="kling",
        server=sim,
        bot_settings={"kling_api_key": KLING_KEY, "kling_base_url": sim.base_url},
        reports_progress=False,  # Kling's task query has no percentage
        set_job_seconds=job_seconds,
        served=lambda: sim.video_bytes,
        serve=serve,
        refuse_at_create=lambda: sim.add_fault("create", http=400, code=1301, message=MODERATION_MESSAGE),
        refuse_at_end=lambda: sim.script_video("moderation"),
        closers=[sim.close],
    )


async def start_gemini() -> Sim:
    sim = GeminiSim(api_key=GEMINI_KEY, video_seconds=SHORT_JOB)
    await sim.start()

    def serve(data: bytes) -> None:
        sim.video_bytes = data

    def job_seconds(value: float) -> None:
        sim.video_seconds = value

    return Sim(
        name="gemini",
        server=sim,
        bot_settings={"gemini_api_key": GEMINI_KEY, "gemini_base_url": sim.base_url},
        reports_progress=False,  # an interaction is queued or in progress, without a percentage
        set_job_seconds=job_seconds,
        served=lambda: sim.video_bytes,
        serve=serve,
        refuse_at_create=lambda: sim.add_fault(
            "create", http=400, code="PROHIBITED_CONTENT", message="The request was blocked by our safety policies."
        ),
        refuse_at_end=lambda: sim.script_outcome("moderation"),  # completed with text and no video
        closers=[sim.close],
    )


def fal_starter(model: str) -> Callable[[], Any]:
    async def start_fal() -> Sim:
        sim = FalSim(api_key=FAL_KEY, job_seconds=SHORT_JOB)
        await sim.start()

        def serve(data: bytes) -> None:
            sim.video_bytes = data

        def job_seconds(value: float) -> None:
            sim.job_seconds = value

        moderation = {"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]}
        return Sim(
            name="fal",
            server=sim,
            bot_settings={
                "fal_key": FAL_KEY,
                "fal_queue_url": sim.queue_url,
                "fal_rest_url": sim.rest_url,
                "fal_cdn_url": sim.cdn_url,
                "fal_model": model,
            },
            reports_progress=False,  # fal's status has a queue position and logs, no percentage
            set_job_seconds=job_seconds,
            served=lambda: sim.video_bytes,
            serve=serve,
            refuse_at_create=lambda: sim.add_fault("submit", http=422, body=moderation),
            refuse_at_end=lambda: sim.script_job("moderation"),
            closers=[sim.close],
            needs_character=True,
        )

    return start_fal


STARTERS = {
    "openai": start_openai,
    "relay": start_relay,
    "kling": start_kling,
    "gemini": start_gemini,
    **{case: fal_starter(model) for case, model in FAL_MODELS.items()},
}


@pytest.fixture(params=PROVIDERS)
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Sim]:
    started = await STARTERS[request.param]()
    yield started
    await started.close()


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("provider-clips") / "hero.mp4"
    return make_clip(path, seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes()


# --- helpers --------------------------------------------------------------------------------------


async def start_bot(harness: BotHarness, sim: Sim, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Castbot:
    bot = await harness.start(providers=sim.name, **sim.bot_settings, **overrides)
    # Status edits are throttled to one per 10 s per job; watch every change instead of waiting.
    monkeypatch.setattr(bot.actions.delivery.status_edits, "progress_every", 0.0)
    return bot


async def run(sandbox: DiscordSandbox, world: World, who: Any, command: str, **options: Any) -> StoredMessage:
    handle = await sandbox.invoke(world.guild, world.channel, who, command, **options)
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert handle.is_ephemeral
    return reply


async def set_budget(sandbox: DiscordSandbox, world: World, usd: str = "10") -> None:
    reply = await run(sandbox, world, world.admin, "budget set", monthly_usd=usd)
    assert reply.content.startswith("Budget saved."), reply.content


async def create_character(sandbox: DiscordSandbox, world: World, name: str, clip: bytes) -> StoredMessage:
    video = sandbox.add_attachment(clip, f"{name.lower()}.mp4", "video/mp4")
    reply = await run(sandbox, world, world.member, "character create", name=name, video=video)
    assert f"Created `@{name}`" in reply.content, reply.content
    return reply


async def cast(sandbox: DiscordSandbox, world: World, sim: Sim, clip: bytes) -> str:
    """The prompt's subject: a character where the engine makes videos only from references."""
    if not sim.needs_character:
        return "a knight"
    await create_character(sandbox, world, "Mira", clip)
    return "@Mira"


def bot_messages(sandbox: DiscordSandbox, world: World) -> list[StoredMessage]:
    return [m for m in world.channel.visible_messages if m.author.id == sandbox.bot.id]


async def generate(sandbox: DiscordSandbox, world: World, prompt: str, **options: Any) -> StoredMessage:
    """Run /generate; returns the job's status message in the channel."""
    queued = await run(sandbox, world, world.member, "generate", prompt=prompt, **options)
    assert "Job #1 is queued" in queued.content, queued.content
    return await sandbox.wait_for(
        lambda: next((m for m in bot_messages(sandbox, world) if m.embeds and m.embeds[0]["title"] == "Job #1"), None),
        TIMEOUT,
        "the status message of job #1",
    )


def result_posts(sandbox: DiscordSandbox, world: World, job: int = 1) -> list[StoredMessage]:
    return [m for m in bot_messages(sandbox, world) if f"job #{job}" in m.content and m.message_reference]


async def wait_result(
    sandbox: DiscordSandbox, world: World, job: int = 1, *, timeout: float = TIMEOUT
) -> StoredMessage:
    return await sandbox.wait_for(
        lambda: next(iter(result_posts(sandbox, world, job)), None), timeout, f"the result of job #{job}"
    )


def result_calls(sandbox: DiscordSandbox, world: World, job: int = 1) -> list[Call]:
    """Every attempt the bot made to post a job's final message in the channel."""
    return [
        c
        for c in sandbox.calls_to("POST", rf"^/channels/{world.channel.id}/messages$")
        if f"job #{job}" in str(c.body.get("content") or "")
    ]


async def job_row(bot: Castbot, job: int = 1) -> Any:
    row = await bot.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job,))
    assert row is not None
    return row


async def wait_job(bot: Castbot, job: int, done: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
    """Poll the job's row until `done(row)`; the loop writes it after Discord has answered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await job_row(bot, job)
        if done(row):
            return row
        if loop.time() > deadline:
            raise TimeoutError(f"job {job} stayed {row['state']} (notified_at={row['notified_at']})")
        await asyncio.sleep(0.02)


async def ledger(bot: Castbot, job: int = 1) -> dict[str, int]:
    rows = await bot.db.fetchall("SELECT kind, amount_micros FROM ledger WHERE job_id = ? ORDER BY id", (job,))
    return {r["kind"]: r["amount_micros"] for r in rows}


async def guild_counter(bot: Castbot, world: World) -> tuple[int, int]:
    row = await bot.db.fetchone(
        "SELECT held_micros, spent_micros FROM budget_counters WHERE scope = 'guild' AND scope_id = ?",
        (str(world.guild.id),),
    )
    assert row is not None
    return int(row["held_micros"]), int(row["spent_micros"])


def status_states(message: StoredMessage) -> list[str]:
    """The Status field of a status message in every version it had, oldest first."""
    versions = [*message.history, {"embeds": message.embeds}]
    states = []
    for version in versions:
        for embed in version.get("embeds") or []:
            for f in embed.get("fields", []):
                if f["name"] == "Status":
                    states.append(str(f["value"]))
    return states


def padded(video: bytes, size: int) -> bytes:
    """A real MP4 grown to `size` bytes with trailing padding (players ignore bytes after the boxes)."""
    return video + b"\0" * (size - len(video))


# --- the happy path -------------------------------------------------------------------------------


async def test_two_characters_video_is_posted_and_its_cost_captured(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    sim: Sim,
    clip_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = await start_bot(harness, sim, monkeypatch)
    await set_budget(sandbox, world)
    for name in ("Mira", "Theo"):
        created = await create_character(sandbox, world, name, clip_bytes)
        assert "could not register" not in created.content  # registered on the provider at creation
    sim.set_job_seconds(1.5)  # long enough to watch progress
    prompt = "@Mira hands @Theo a lantern on the pier"

    status = await generate(sandbox, world, prompt)
    result = await wait_result(sandbox, world)

    # the MP4 the simulator served, byte for byte, attached to a reply to the status message
    assert len(result.attachments) == 1
    assert result.attachments[0].filename == "castbot-job-1.mp4"
    served = sim.served()
    assert result.attachments[0].data == served
    assert result.message_reference is not None and int(result.message_reference["message_id"]) == status.id
    assert result.pinged_user_ids == [world.member.id]
    assert f"({sim.name}, $" in result.content

    # the status message was edited while the job ran, showing its progress
    states = status_states(sandbox.message(status.id))
    rendering = [s for s in states if s.startswith("rendering")]
    assert rendering, states
    if sim.reports_progress:
        percents = [int(s.removeprefix("rendering").strip(" %")) for s in rendering if s.endswith("%")]
        assert any(0 < p < 100 for p in percents), states
    final = await sandbox.wait_for(lambda: "delivered" in status_states(sandbox.message(status.id))[-1] or None)
    assert final

    # the provider got both characters through its own protocol
    await assert_provider_saw_two_characters(sim)

    # money: the provider's actual cost captured once, nothing left held
    job = await wait_job(bot, 1, lambda r: r["state"] == "delivered")
    assert hashlib.sha256(served).hexdigest() == job["result_sha256"]
    provider = bot.providers[sim.name]
    seconds = provider.capabilities.fit_seconds(8)  # /generate's default length, as this provider makes it
    request = GenerationRequest(prompt, seconds, orientation=Orientation.LANDSCAPE, quality=Quality.STANDARD)
    expected = provider.estimate(request)
    if sim.name == "kling":  # Kling reports what it billed; it must agree with the price book
        task = next(iter(sim.server.tasks.values()))
        assert expected == usd_to_micros(KlingSim.units(task) * Decimal("0.14"))
    if sim.name == "gemini":  # Gemini bills tokens, the references' included: what it reports is captured
        (interaction,) = sim.server.interactions.values()
        usage = sim.server.interaction_json(interaction, reading=False)["usage"]
        (video,) = usage["output_tokens_by_modality"]
        billed = Decimal(video["tokens"]) * Decimal("17.50") + Decimal(usage["total_input_tokens"]) * Decimal("1.50")
        expected = usd_to_micros(billed / 1_000_000)
        assert provider.estimate(request) < expected <= job["estimate_micros"]  # the hold covered the references
    assert expected > 0
    assert job["cost_micros"] == expected
    entries = await ledger(bot)
    assert entries["capture"] == expected
    assert entries["hold"] == job["estimate_micros"]
    assert entries.get("release", 0) == job["estimate_micros"] - expected
    assert await guild_counter(bot, world) == (0, expected)
    assert len(result_calls(sandbox, world)) == 1


async def assert_provider_saw_two_characters(sim: Sim) -> None:
    if sim.name == "openai":
        server: OpenAISim = sim.server
        (opened,) = server.creates()
        assert len(opened.json["characters"]) == 2
        assert {c["id"] for c in opened.json["characters"]} == set(server.characters)
    elif sim.name == "relay":
        relay: RelaySim = sim.server
        (posted,) = relay.calls("create_video")
        usernames = {c.username for c in relay.characters.values()}
        assert len(usernames) == 2
        assert all(f"@{u}" in posted.json["prompt"] for u in usernames)
        assert posted.json["seconds"] == "10"  # the relay makes 10 or 15 s videos: 8 s is rounded up
    elif sim.name == "gemini":
        gemini: GeminiSim = sim.server
        (body,) = gemini.creates
        blocks = body["input"] if body["input"][0]["type"] != "user_input" else body["input"][0]["content"]
        kinds = [b["type"] for b in blocks]
        assert kinds == ["image", "image", "image", "video", "video", "text"]  # media first, the text last
        assert body["generation_config"]["video_config"] == {"task": "reference_to_video"}
        text = blocks[-1]["text"]
        assert "@Image 1 hands @Image 3 a lantern on the pier" in text  # Mira has images 1-2, Theo 3
        assert "shows Mira" in text and "shows Theo" in text
        uploaded = {b["uri"] for b in blocks if b["type"] == "video"}
        assert len(uploaded) == 2  # each character's clip, uploaded once through the Files API
    elif sim.name == "kling":
        kling: KlingSim = sim.server
        (create,) = kling.recorded("POST", "/omni-video/")
        elements = [c for c in create.body["contents"] if c["type"] == "element"]
        assert {str(e["element_id"]) for e in elements} == kling.ready_element_ids()
        assert len(elements) == 2
    else:
        fal: FalSim = sim.server
        (job,) = fal.jobs.values()
        assert job.errors == []  # the simulated model took the input as it was
        body = job.body
        if "elements" in body:  # Kling O3: one element per character, built from its frames
            assert len(body["elements"]) == 2
            assert "@Element1" in body["prompt"] and "@Element2" in body["prompt"]
            urls = [body["elements"][0]["frontal_image_url"], body["elements"][1]["frontal_image_url"]]
        else:  # Wan, Seedance: the characters' own clips
            assert len(body["video_urls"]) == 2
            assert "@Video1" in body["prompt"] and "@Video2" in body["prompt"]
            urls = body["video_urls"]
        assert len(set(urls)) == 2 and all(u in fal.uploads for u in urls)
        assert "@Mira" not in body["prompt"] and "@Theo" not in body["prompt"]


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["create", "end"])
async def test_moderation_refusal_is_posted_and_the_hold_released(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    sim: Sim,
    clip_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    phase: str,
) -> None:
    bot = await start_bot(harness, sim, monkeypatch)
    await set_budget(sandbox, world)
    subject = await cast(sandbox, world, sim, clip_bytes)
    (sim.refuse_at_create if phase == "create" else sim.refuse_at_end)()

    status = await generate(sandbox, world, f"{subject} storms the castle gate")
    failure = await wait_result(sandbox, world)

    assert "the provider refused this prompt" in failure.content, failure.content
    assert "Nothing was charged" in failure.content
    assert failure.attachments == []
    assert failure.message_reference is not None and int(failure.message_reference["message_id"]) == status.id
    assert failure.pinged_user_ids == [world.member.id]
    job = await wait_job(bot, 1, lambda r: r["notified_at"] is not None)
    assert (job["state"], job["error_code"]) == ("rejected", "moderation")
    assert job["cost_micros"] in (None, 0)
    entries = await ledger(bot)
    assert set(entries) == {"hold", "release"}
    assert entries["release"] == entries["hold"] == job["estimate_micros"] > 0
    assert await guild_counter(bot, world) == (0, 0)
    assert len(result_calls(sandbox, world)) == 1


# --- videos too large for the channel -------------------------------------------------------------


async def test_oversize_video_is_reencoded_to_fit_and_attached(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    sim: Sim,
    clip_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each engine's real video grown past an unboosted guild's 10 MiB with trailing padding: the
    # padding carries no frames, so the re-encoded copy is small, attached, and says so.
    big = padded(sim.served(), 10 * MIB + 512 * 1024)
    sim.serve(big)
    bot = await start_bot(harness, sim, monkeypatch)
    await set_budget(sandbox, world)
    subject = await cast(sandbox, world, sim, clip_bytes)

    await generate(sandbox, world, f"{subject} watches a whale breach at dawn")
    message = await wait_result(sandbox, world, timeout=FIT_TIMEOUT)
    job = await wait_job(bot, 1, lambda r: r["state"] == "delivered")

    assert "re-encoded to fit this server's upload limit of 10.0 MiB; the original was 10.5 MiB" in message.content
    (attachment,) = message.attachments
    assert attachment.filename == "castbot-job-1.mp4"
    assert len(attachment.data) <= 10 * MIB
    original = Path(job["result_path"])
    fitted = original.with_name(f"{original.stem}.fit.mp4")
    assert fitted.read_bytes() == attachment.data
    source, copy = probe(original), probe(fitted)
    assert abs(copy.duration - source.duration) <= 0.1
    assert copy.has_audio == source.has_audio
    # the original stays where it was, whole, for /character extract and Re-roll
    assert job["result_size"] == len(big)
    assert original.read_bytes() == big
    attempts = result_calls(sandbox, world)
    assert [(c.status, len(c.files)) for c in attempts] == [(200, 1)]
    assert (await ledger(bot))["capture"] == job["cost_micros"] > 0

    # nothing more is posted however long the loop keeps running
    bot.services.wake_loop()
    await sandbox.wait_for(lambda: not bot.services.loop_wakeup.is_set() or None)
    assert len(result_calls(sandbox, world)) == 1


@pytest.fixture(scope="module")
def engine_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real engine-sized result: 10 s of 1080p noise with audio, about 30 MB."""
    path = tmp_path_factory.mktemp("fit") / "engine.mp4"
    return make_noisy_video(path, seconds=10, width=1920, height=1080, fps=24, bitrate=24_000_000).read_bytes()


async def test_a_30_mb_video_is_reencoded_under_10_mib_and_attached(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    engine_video: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert len(engine_video) > 25 * 1_000_000
    sim = await start_openai()
    try:
        sim.serve(engine_video)
        bot = await start_bot(harness, sim, monkeypatch)
        await set_budget(sandbox, world)

        await generate(sandbox, world, "a whale breaches at dawn")
        message = await wait_result(sandbox, world, timeout=FIT_TIMEOUT)
        job = await wait_job(bot, 1, lambda r: r["state"] == "delivered")

        original_size = human_size(len(engine_video))
        assert f"re-encoded to fit this server's upload limit of 10.0 MiB; the original was {original_size}" in (
            message.content
        ), message.content
        (attachment,) = message.attachments
        assert len(attachment.data) <= 10 * MIB
        posted = tmp_path / "posted.mp4"
        posted.write_bytes(attachment.data)
        copy = probe(posted)
        assert abs(copy.duration - 10.0) <= 0.1
        assert copy.has_audio
        assert (copy.width, copy.height) == (1920, 1080)  # 30 MB in 10 s leaves enough bits for 1080p
        frames = verify(posted, 10 * MIB, probe(Path(job["result_path"])))  # decodes to the end
        assert frames.size == len(attachment.data)
        assert Path(job["result_path"]).read_bytes() == engine_video
    finally:
        await sim.close()


async def test_a_boosted_server_gets_the_original_untouched(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    engine_video: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = await start_openai()
    try:
        sim.serve(engine_video)
        world.guild.premium_tier = 2  # 50 MiB
        bot = await start_bot(harness, sim, monkeypatch)
        await set_budget(sandbox, world)

        await generate(sandbox, world, "a whale breaches at dawn")
        message = await wait_result(sandbox, world, timeout=FIT_TIMEOUT)
        job = await wait_job(bot, 1, lambda r: r["state"] == "delivered")

        assert "re-encoded" not in message.content
        (attachment,) = message.attachments
        assert attachment.data == engine_video
        original = Path(job["result_path"])
        assert not original.with_name(f"{original.stem}.fit.mp4").exists()
    finally:
        await sim.close()


async def test_a_video_too_long_for_the_limit_gets_the_link_and_why(
    sandbox: DiscordSandbox,
    world: World,
    harness: BotHarness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ten minutes of 480p: even at 480p's floor bitrate it needs more than 10 MiB.
    long = make_noisy_video(
        tmp_path / "long.mp4", seconds=600, width=854, height=480, fps=1, bitrate=20_000, audio=False, distinct_frames=2
    )
    big = padded(long.read_bytes(), 10 * MIB + 512 * 1024)
    sim = await start_relay()
    try:
        sim.serve(big)
        bot = await start_bot(harness, sim, monkeypatch)
        await set_budget(sandbox, world)

        await generate(sandbox, world, "a whale breaches at dawn")
        message = await wait_result(sandbox, world, timeout=FIT_TIMEOUT)
        job = await wait_job(bot, 1, lambda r: r["state"] == "delivered")

        assert "over this server's upload limit of 10.0 MiB" in message.content, message.content
        assert "Even re-encoded down to 480p, a video this long cannot fit in 10.0 MiB." in message.content
        assert job["result_url"] and job["result_url"] in message.content
        assert message.attachments == []
        original = Path(job["result_path"])
        assert original.read_bytes() == big
        assert not original.with_name(f"{original.stem}.fit.mp4").exists()
        assert [(c.status, len(c.files)) for c in result_calls(sandbox, world)] == [(200, 0)]
    finally:
        await sim.close()


async def test_a_failed_reencode_says_so_and_uploads_nothing(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await start_openai()
    try:
        sim.serve(padded(sim.served(), 10 * MIB + 512 * 1024))
        bot = await start_bot(harness, sim, monkeypatch)

        async def broken(original: Path, limit: int) -> Fitted:
            return Fitted(None)  # e.g. a full disk while writing the copy

        monkeypatch.setattr(bot.services.encoding, "fit", broken)
        await set_budget(sandbox, world)

        await generate(sandbox, world, "a whale breaches at dawn")
        message = await wait_result(sandbox, world)

        assert "over this server's upload limit of 10.0 MiB" in message.content, message.content
        assert "Re-encoding it to fit 10.0 MiB did not succeed." in message.content
        assert message.attachments == []
        assert [(c.status, len(c.files)) for c in result_calls(sandbox, world)] == [(200, 0)]
    finally:
        await sim.close()


async def test_upload_refused_with_413_falls_back_to_one_text_message(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await start_openai()
    try:
        big = padded(sim.served(), 10 * MIB + 512 * 1024)
        sim.serve(big)
        world.guild.premium_tier = 2  # the bot learns a 50 MiB limit from GUILD_CREATE...
        bot = await start_bot(harness, sim, monkeypatch)
        assert bot.get_guild(world.guild.id).filesize_limit == 50 * MIB  # type: ignore[union-attr]
        world.guild.premium_tier = 0  # ...then the boost lapses without the bot hearing of it
        await set_budget(sandbox, world)

        await generate(sandbox, world, "a whale breaches at dawn")
        message = await wait_result(sandbox, world)
        job = await wait_job(bot, 1, lambda r: r["state"] == "delivered")

        assert "over this server's upload limit" in message.content, message.content
        assert message.attachments == []
        assert job["result_message_id"] == message.id
        # one upload refused with 413, then exactly one plain message: no retry loop
        attempts = result_calls(sandbox, world)
        assert [(c.status, len(c.files)) for c in attempts] == [(413, 1), (200, 0)]
        bot.services.wake_loop()
        await sandbox.wait_for(lambda: not bot.services.loop_wakeup.is_set() or None)
        assert len(result_calls(sandbox, world)) == 2
        assert len(result_posts(sandbox, world)) == 1
    finally:
        await sim.close()


# --- the relay registers characters from a clip URL -----------------------------------------------


async def test_relay_registers_a_character_at_dispatch_when_creation_could_not(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clip_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await start_relay()
    relay: RelaySim = sim.server
    try:
        bot = await start_bot(harness, sim, monkeypatch)
        await set_budget(sandbox, world)
        relay.fail("create_character", RelayFault.heavy_load())  # the relay is busy at creation time
        created = await create_character(sandbox, world, "Mira", clip_bytes)
        assert "could not register it right now" in created.content
        assert relay.characters == {}

        await generate(sandbox, world, "@Mira lights a lantern", seconds=10)
        result = await wait_result(sandbox, world)

        assert len(result.attachments) == 1, result.content
        assert result.attachments[0].data == relay.video
        (character,) = relay.characters.values()
        (create,) = relay.calls("create_video")
        assert f"@{character.username}" in create.json["prompt"]
        # registered from the clip the member uploaded (the relay fetched it from Discord's CDN)
        assert character.source["url"].startswith(sandbox.base_url)
        job = await wait_job(bot, 1, lambda r: r["state"] == "delivered")
        assert (await ledger(bot))["capture"] == job["cost_micros"] > 0
    finally:
        await sim.close()
