"""A hostile member against the real bot: every refusal answered, within Discord's limits, with
nothing stored or held; look-alike names, invisible prompts and strip-shaped clips refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.app import Castbot
from discord_sandbox import DiscordSandbox, Member, StoredMessage
from discord_sandbox.clips import make_clip, make_png_as_mp4
from tests.conftest import BotHarness, World
from tests.helpers import confirm_consent

pytestmark = pytest.mark.e2e
TIMEOUT = 20.0
CYRILLIC_MOSSA = "m\u043ess\u0430"  # m, Cyrillic о, s, s, Cyrillic а
CYRILLIC_EVERYONE = "\u0435veryone"  # Cyrillic е


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("hostile-clips")
    return {
        "clip": make_clip(root / "clip.mp4", seconds=3.0, size=(160, 120), fps=12, blur=()).read_bytes(),
        "strip": make_clip(root / "strip.mp4", seconds=3.0, size=(1280, 64), fps=12, blur=()).read_bytes(),
        "tall": make_clip(root / "tall.mp4", seconds=3.0, size=(64, 400), fps=12, blur=()).read_bytes(),
        "png": make_png_as_mp4(root / "pic.png").read_bytes(),
    }


async def answer(handle: Any) -> str:
    """The member's visible reply: ephemeral, within Discord's limits (the sandbox checks them)."""
    reply = await handle.wait_final_message(timeout=TIMEOUT)
    assert handle.is_ephemeral
    assert 0 < len(reply.content) <= 2000
    return str(reply.content)


async def create(sandbox: DiscordSandbox, world: World, clip: bytes, name: str, who: Member | None = None) -> str:
    video = sandbox.add_attachment(clip, "clip.mp4", "video/mp4")
    handle = await sandbox.invoke(
        world.guild, world.channel, who or world.member, "character create", name=name, video=video
    )
    return await answer(handle)


async def count(bot: Castbot, sql: str) -> int:
    row = await bot.db.fetchone(sql)
    assert row is not None
    return int(row[0] or 0)


async def nothing_stored_or_held(bot: Castbot, characters: int = 0, jobs: int = 0) -> None:
    assert await count(bot, "SELECT COUNT(*) FROM characters") == characters
    assert await count(bot, "SELECT COUNT(*) FROM jobs") == jobs
    assert await count(bot, "SELECT SUM(held_micros) FROM budget_counters") == 0


def bot_posts(sandbox: DiscordSandbox, world: World) -> list[StoredMessage]:
    return [m for m in world.channel.visible_messages if m.author.id == sandbox.bot.id]


async def status_of(sandbox: DiscordSandbox, world: World, job: int) -> StoredMessage:
    def found() -> StoredMessage | None:
        return next((m for m in bot_posts(sandbox, world) if m.embeds and m.embeds[0]["title"] == f"Job #{job}"), None)

    return await sandbox.wait_for(found, TIMEOUT, f"the status message of job #{job}")


async def result_of(sandbox: DiscordSandbox, world: World, job: int) -> StoredMessage:
    def found() -> StoredMessage | None:
        posts = bot_posts(sandbox, world)
        return next((m for m in posts if f"job #{job}" in m.content and m.message_reference), None)

    return await sandbox.wait_for(found, 30, f"the result of job #{job}")


async def generate(sandbox: DiscordSandbox, world: World, prompt: str, who: Member | None = None) -> str:
    handle = await sandbox.invoke(world.guild, world.channel, who or world.member, "generate", prompt=prompt, seconds=2)
    return await answer(handle)


def button_message(sandbox: DiscordSandbox, world: World, job: int) -> StoredMessage:
    """A message in the *other* guild carrying buttons for `job` (a forged or stale message)."""
    buttons = [
        {"type": 2, "style": 2, "label": action, "custom_id": f"castbot:{action}:{job}"}
        for action in ("cancel", "reroll", "mkchar")
    ]
    return world.other_channel.add_message(sandbox.bot, "old buttons", components=[{"type": 1, "components": buttons}])


# --- 1. every button x every refusal is answered ----------------------------------------------------


async def test_every_job_button_refusal_is_answered_specifically(
    sandbox: DiscordSandbox, world: World, harness: BotHarness, clips: dict[str, bytes]
) -> None:
    bot = await harness.start(local_render_seconds=60)  # job #1 stays rendering
    eve = world.guild.add_member("eve")
    assert "Job #1 is queued" in await generate(sandbox, world, "a kite over a hill")
    status = await status_of(sandbox, world, 1)

    # Cancel pressed by someone who is not the requester
    reply = await answer(await sandbox.click(status, "castbot:cancel:1", eve))
    assert "belongs to someone else" in reply
    # Cancel on a job that is already rendering
    async with asyncio.timeout(TIMEOUT):
        while await count(bot, "SELECT COUNT(*) FROM jobs WHERE id = 1 AND state = 'running'") == 0:
            await asyncio.sleep(0.05)
    reply = await answer(await sandbox.click(status, "castbot:cancel:1", world.member))
    assert "already rendering" in reply

    # Buttons whose job is in another server, or does not exist, every kind
    forged = button_message(sandbox, world, 1)
    for action in ("cancel", "reroll"):
        reply = await answer(await sandbox.click(forged, f"castbot:{action}:1", world.other_member))
        assert "There is no job #1 in this server" in reply
    reply = await answer(await sandbox.click(forged, "castbot:mkchar:1", world.other_member))
    assert "Something went wrong" not in reply
    missing = button_message(sandbox, world, 987654)
    for action in ("cancel", "reroll", "mkchar"):
        reply = await answer(await sandbox.click(missing, f"castbot:{action}:987654", world.other_member))
        assert "Something went wrong" not in reply
    assert await count(bot, "SELECT COUNT(*) FROM jobs") == 1


async def test_reroll_after_its_character_was_deleted_and_others_finished_jobs_are_refused(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    eve = world.guild.add_member("eve")
    assert "Created" in await create(sandbox, world, clips["clip"], "Anna")
    assert "Job #1 is queued" in await generate(sandbox, world, "@Anna waves")
    result = await result_of(sandbox, world, 1)
    status = await status_of(sandbox, world, 1)

    reply = await answer(await sandbox.click(status, "castbot:cancel:1", world.member))
    assert "already finished" in reply
    # Make character from someone else's video: refused before any modal opens
    reply = await answer(await sandbox.click(result, "castbot:mkchar:1", eve))
    assert "Something went wrong" not in reply

    deleted = await sandbox.invoke(world.guild, world.channel, world.member, "character delete", name="Anna")
    await answer(deleted)
    reply = await answer(await sandbox.click(result, "castbot:reroll:1", world.member))
    assert "`@anna` was deleted" in reply
    assert await count(castbot, "SELECT COUNT(*) FROM jobs") == 1
    assert await count(castbot, "SELECT SUM(held_micros) FROM budget_counters") == 0


async def test_an_unexpected_error_in_a_button_is_answered_with_a_logged_ref(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, caplog: pytest.LogCaptureFixture
) -> None:
    await generate(sandbox, world, "a boat")
    status = await status_of(sandbox, world, 1)
    await castbot.db.execute("ALTER TABLE jobs RENAME TO jobs_gone")  # every read of a job now fails
    reply = await answer(await sandbox.click(status, "castbot:cancel:1", world.member))
    assert "Something went wrong (ref " in reply
    ref = reply.split("(ref ", 1)[1][:4]
    assert any(f"ref={ref}" in r.getMessage() for r in caplog.records)


# --- 2. replies built from member input fit Discord's limits -----------------------------------------


async def test_fifty_unknown_names_are_listed_within_one_message(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    prompt = "\n".join(f"@stranger_{i:02d}" for i in range(50))
    reply = await generate(sandbox, world, prompt)
    assert "…and 42 more." in reply
    await nothing_stored_or_held(castbot)


async def test_every_free_text_option_at_its_maximum_length_is_answered(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    """Each string option of every command, filled to the length the synced schema allows with
    text that is never valid: the reply arrives (the sandbox refuses anything over a limit)."""
    png = sandbox.add_attachment(clips["png"], "x.mp4", "video/mp4")
    required: dict[str, dict[str, Any]] = {
        "character create": {"video": png},
        "character share": {"visibility": "server"},
    }
    commands = sandbox.synced_commands(world.guild) or sandbox.synced_commands()
    checked = []
    for command in commands:
        for path, options in _leaves(command):
            for option in options:
                if option["type"] != 3 or option.get("choices"):
                    continue
                assert "max_length" in option, f"/{path} {option['name']} has no length limit"
                # an unknown @name first, so a prompt that long is refused rather than started
                text = ("@nobody_here " + "ẞ\u202e`@" * 2000)[: option["max_length"]]
                values: dict[str, Any] = {o["name"]: "x" for o in options if o.get("required") and o["type"] == 3}
                values.update(required.get(path, {}))
                values[option["name"]] = text
                values = {k: v for k, v in values.items() if k in {o["name"] for o in options}}
                who = world.admin if path.startswith(("settings", "budget")) else world.member
                # /operator is hidden from non-admins: model an admin who sees it (the bot refuses them)
                handle = await sandbox.invoke(world.guild, world.channel, who, path, options=values,
                                              override_permissions=path.startswith("operator"))  # fmt: skip
                reply = await handle.wait_final_message(timeout=TIMEOUT)
                assert reply.content or reply.embeds
                checked.append(f"{path}.{option['name']}")
    assert {"generate.prompt", "generate.provider", "character create.name", "character import.code"} <= set(checked)
    assert [c for c in sandbox.calls if c.status >= 400 and not c.injected] == []
    await nothing_stored_or_held(castbot)


def _leaves(command: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    if command.get("type", 1) != 1:
        return []
    options = command.get("options") or []
    subs = [o for o in options if o["type"] in (1, 2)]
    if not subs:
        return [(command["name"], options)]
    out = []
    for sub in subs:
        for path, leaf in _leaves({**sub, "type": 1}):
            out.append((f"{command['name']} {path}", leaf))
    return out


# --- 3. look-alike names ---------------------------------------------------------------------------


async def test_look_alike_names_are_refused_and_mentions_resolve_to_the_name_they_look_like(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    eve = world.guild.add_member("eve")
    assert "Created" in await create(sandbox, world, clips["clip"], "mossa")
    reply = await create(sandbox, world, clips["clip"], CYRILLIC_MOSSA, who=eve)
    assert "`@mossa`" in reply and "looks the same" in reply
    for name in ("MOSSA", "ｍｏｓｓａ", "𝐦𝐨𝐬𝐬𝐚"):  # full-width and mathematical variants stay folded
        assert "already has a character" in await create(sandbox, world, clips["clip"], name, who=eve)
    for reserved in (CYRILLIC_EVERYONE, "h\u0435re", "ＥＶＥＲＹＯＮＥ"):
        assert "reserved" in await create(sandbox, world, clips["clip"], reserved, who=eve)
    assert await count(castbot, "SELECT COUNT(*) FROM characters") == 1

    # @mоssа (Cyrillic) in a prompt is the Latin character, as uniqueness sees it
    assert "Job #1 is queued" in await generate(sandbox, world, f"@{CYRILLIC_MOSSA} jumps")
    row = await castbot.db.fetchone("SELECT request_json FROM jobs WHERE id = 1")
    assert row is not None
    assert [c["id"] for c in json.loads(row[0])["characters"]] == [1]
    await result_of(sandbox, world, 1)


async def test_an_import_alias_cannot_look_like_a_local_name(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    home = await sandbox.invoke(world.guild, world.channel, world.member, "character create", name="Fox",
                                video=sandbox.add_attachment(clips["clip"], "c.mp4", "video/mp4"),
                                visibility="public")  # fmt: skip
    await answer(home)
    await confirm_consent(sandbox, home, world.member)
    code = await castbot.db.fetchone("SELECT share_code FROM characters WHERE name = 'Fox'")
    assert code is not None
    other = World(world.other_guild, world.other_channel, world.admin, world.other_member, world.guild,
                  world.channel, world.member)  # fmt: skip
    assert "Created" in await create(sandbox, other, clips["clip"], "mossa", who=world.other_member)
    handle = await sandbox.invoke(world.other_guild, world.other_channel, world.other_member, "character import",
                                  code=code[0], name=CYRILLIC_MOSSA)  # fmt: skip
    assert "looks the same" in await answer(handle)
    assert await count(castbot, "SELECT COUNT(*) FROM character_imports") == 0


# --- 4. invisible prompts and descriptions ---------------------------------------------------------

INVISIBLE = ["\u200b\u200c\u200d", "\u202e\u202d\u2066\u2069", "\u2800\u3164 \u00a0\t", "\ufe0f\u034f\u2060",
             "\u200e\u200f\u061c"]  # fmt: skip


async def test_prompts_of_only_invisible_or_bidi_characters_start_nothing(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    for prompt in INVISIBLE:
        assert "The prompt is empty" in await generate(sandbox, world, prompt)
    await nothing_stored_or_held(castbot)
    # bidi controls inside a real prompt are removed before it is stored or shown
    assert "Job #1" in await generate(sandbox, world, "a cat \u202eedisni\u202c on a mat")
    row = await castbot.db.fetchone("SELECT prompt FROM jobs WHERE id = 1")
    assert row is not None and row[0] == "a cat edisni on a mat"
    await result_of(sandbox, world, 1)


async def test_invisible_descriptions_are_empty_and_bidi_is_removed(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    video = sandbox.add_attachment(clips["clip"], "c.mp4", "video/mp4")
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "character create", name="Quiet",
                                  video=video, description="\u200b\u202e\u2800")  # fmt: skip
    await answer(handle)
    video = sandbox.add_attachment(clips["clip"], "c.mp4", "video/mp4")
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "character create", name="Loud",
                                  video=video, description="a \u202eder\u202c fox")  # fmt: skip
    await answer(handle)
    rows = await castbot.db.fetchall("SELECT name, description FROM characters ORDER BY id")
    assert [tuple(r) for r in rows] == [("Quiet", ""), ("Loud", "a der fox")]


# --- 5. extreme aspect ratios ----------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["strip", "tall"])
async def test_strip_shaped_clips_are_refused_with_the_allowed_shapes(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes], clip: str
) -> None:
    reply = await create(sandbox, world, clips[clip], "Stripe")
    assert "shape" in reply and "2.5:1" in reply and "16:9" in reply
    await nothing_stored_or_held(castbot)


async def test_a_refusal_in_russian_for_a_look_alike(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, clips: dict[str, bytes]
) -> None:
    await create(sandbox, world, clips["clip"], "mossa")
    video = sandbox.add_attachment(clips["clip"], "c.mp4", "video/mp4")
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "character create", locale="ru",
                                  name=CYRILLIC_MOSSA, video=video)  # fmt: skip
    assert "выглядит так же" in await answer(handle)
